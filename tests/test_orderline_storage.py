"""Order storage: SQLite by default, PostgreSQL by DSN, idempotent by order key."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from pipeflow.errors import ConfigError, LocalError, RemoteError
from pipelines.orderline.address import parse_address
from pipelines.orderline.catalog import DEFAULT_CATALOG
from pipelines.orderline.order import Order
from pipelines.orderline.storage import (
    OrderRepository,
    OutOfStock,
    PostgresOrderRepository,
    SqliteOrderRepository,
    open_repository,
)


def make_order(pizzas: int = 2, phone: str = "5551234567") -> Order:
    order = Order()
    order.add(DEFAULT_CATALOG.get("pizza"), pizzas)
    order.add(DEFAULT_CATALOG.get("gelato"), 1)
    order.set_phone(phone)
    order.set_address(parse_address("12 Main Street, Springfield"))
    return order


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    """A table name unique to this test; dropped afterwards."""
    import psycopg

    name = f"orders_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_stock"')


@pytest.fixture(params=["sqlite", "postgres"])
async def repository(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OrderRepository]:
    if request.param == "sqlite":
        yield SqliteOrderRepository(tmp_path / "orders.sqlite3")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield PostgresOrderRepository(dsn, request.getfixturevalue("pg_table"))


async def test_save_then_read_back(repository: OrderRepository) -> None:
    order = make_order()
    stored = await repository.save(order)
    assert stored.order_id.startswith("ORD-") and len(stored.order_id) == 12
    assert stored.idempotency_key == order.idempotency_key
    assert [(ln.sku, ln.quantity, ln.unit_price) for ln in stored.lines] == [
        ("pizza", 2, Decimal("10.00")), ("ice_cream", 1, Decimal("3.00"))
    ]
    assert stored.total == Decimal("23.00")
    assert (stored.phone, stored.address, stored.currency) == (
        "5551234567", "12 Main Street, Springfield", "USD"
    )
    assert stored.items_text() == "2 pizzas, 1 ice cream"
    assert stored.created_at.tzinfo is not None
    assert await repository.get(stored.order_id) == stored
    assert await repository.list() == [stored]
    assert await repository.get("ORD-NOPE") is None


async def test_saving_the_same_order_twice_stores_it_once(repository: OrderRepository) -> None:
    order = make_order()
    first = await repository.save(order)
    again = await repository.save(order)
    assert again == first
    # A retry racing the first call: still one row, one id.
    racing = await asyncio.gather(*(repository.save(order) for _ in range(4)))
    assert {s.order_id for s in racing} == {first.order_id}
    assert [s.order_id for s in await repository.list()] == [first.order_id]


async def test_first_write_wins_for_one_key(repository: OrderRepository) -> None:
    order = make_order(pizzas=2)
    first = await repository.save(order)
    order.add(DEFAULT_CATALOG.get("pizza"), 1)
    assert (await repository.save(order)).total == first.total == Decimal("23.00")


async def test_different_orders_get_different_ids(repository: OrderRepository) -> None:
    one = await repository.save(make_order(pizzas=1))
    two = await repository.save(make_order(pizzas=3, phone="+445551234567"))
    assert one.order_id != two.order_id
    assert [s.order_id for s in await repository.list()] == [one.order_id, two.order_id]
    assert (await repository.get(two.order_id)).phone == "+445551234567"  # type: ignore[union-attr]


def test_repositories_fit_the_protocol(tmp_path: Path) -> None:
    assert isinstance(SqliteOrderRepository(tmp_path / "x.db"), OrderRepository)
    assert isinstance(PostgresOrderRepository("postgresql://u@h/db"), OrderRepository)


async def test_sqlite_file_uses_wal_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "run" / "nested" / "orders.sqlite3"
    repo = SqliteOrderRepository(path, table="shop_orders")
    assert not path.exists()
    stored = await repo.save(make_order())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT order_id, total, phone FROM shop_orders").fetchall()
    assert rows == [(stored.order_id, "23.00", "5551234567")]
    # A second repository on the same file sees the same order.
    assert await SqliteOrderRepository(path, table="shop_orders").list() == [stored]


async def test_sqlite_that_cannot_be_written_is_a_local_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    repo = SqliteOrderRepository(blocker / "orders.sqlite3")
    with pytest.raises(LocalError, match="Cannot open the orders database"):
        await repo.save(make_order())
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LocalError, match=r"corrupt\.sqlite3 failed"):
        await SqliteOrderRepository(corrupt).list()


async def test_postgres_down_is_a_remote_error_without_the_password() -> None:
    repo = PostgresOrderRepository("postgresql://shop:secret@127.0.0.1:1/orders")
    with pytest.raises(RemoteError, match=r"Cannot connect to PostgreSQL at 127\.0\.0\.1:1/orders")\
            as caught:
        await repo.save(make_order())
    assert "secret" not in str(caught.value)


async def test_postgres_table_in_a_schema(postgres_dsn: str) -> None:
    import psycopg

    schema = f"orderline_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        repo = PostgresOrderRepository(postgres_dsn, table=f"{schema}.orders")
        stored = await repo.save(make_order())
        with psycopg.connect(postgres_dsn) as conn:
            row = conn.execute(
                f'SELECT order_id, total, lines->0->>\'sku\' FROM "{schema}".orders'
            ).fetchone()
        assert row == (stored.order_id, Decimal("23.00"), "pizza")
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize(
    ("setting", "kind", "where"),
    [
        ("postgresql://u@127.0.0.1:5432/test", PostgresOrderRepository, None),
        ("postgres://u@127.0.0.1/test", PostgresOrderRepository, None),
        ("sqlite:///rel/orders.db", SqliteOrderRepository, "rel/orders.db"),
        ("sqlite:////abs/orders.db", SqliteOrderRepository, "/abs/orders.db"),
        ("out/orders.sqlite3", SqliteOrderRepository, "out/orders.sqlite3"),
        (Path("/tmp/x.db"), SqliteOrderRepository, "/tmp/x.db"),
    ],
)
def test_open_repository_chooses_by_setting(
    setting: str | Path, kind: type, where: str | None
) -> None:
    repo = open_repository(setting)
    assert type(repo) is kind
    if where is not None:
        assert str(repo.path) == where  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("", "the setting is empty"),
        (":memory:", "in-memory SQLite database would lose every order"),
        ("mysql://root:pw@db/shop", "unknown scheme 'mysql'"),
    ],
)
def test_open_repository_refuses_bad_settings(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_repository(setting)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("table", ["1orders", "orders; DROP TABLE x", "a.b", ""])
def test_bad_sqlite_table_names_are_refused(table: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use letters, digits and underscores"):
        SqliteOrderRepository(tmp_path / "x.db", table=table)


def test_bad_postgres_table_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"use 'table' or 'schema\.table'"):
        PostgresOrderRepository("postgresql://u@h/db", table="a.b.c")
    with pytest.raises(ConfigError, match="use letters, digits"):
        PostgresOrderRepository("postgresql://u@h/db", table='x"; drop')


STOCK = {p.sku: p.stock for p in DEFAULT_CATALOG}


@pytest.fixture(params=["sqlite", "postgres"])
async def stocked(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteOrderRepository | PostgresOrderRepository]:
    """A repository that reserves the default catalog's stock (50 pizzas)."""
    if request.param == "sqlite":
        yield SqliteOrderRepository(tmp_path / "orders.sqlite3", stock=STOCK)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield PostgresOrderRepository(dsn, request.getfixturevalue("pg_table"), stock=STOCK)


async def test_racing_orders_cannot_take_more_than_the_stock(
    stocked: SqliteOrderRepository | PostgresOrderRepository,
) -> None:
    # Two calls each order all 50 pizzas at once: exactly one is stored.
    results = await asyncio.gather(
        *(stocked.save(make_order(pizzas=50)) for _ in range(2)), return_exceptions=True
    )
    stored = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, OutOfStock)]
    assert len(stored) == 1 and len(refused) == 1, results
    assert (refused[0].sku, refused[0].available, refused[0].wanted) == ("pizza", 0, 50)
    assert [s.order_id for s in await stocked.list()] == [stored[0].order_id]
    assert await stocked.available("pizza") == 0
    assert await stocked.available("ice_cream") == STOCK["ice_cream"] - 1


async def test_many_small_racing_orders_stop_at_the_stock(
    stocked: SqliteOrderRepository | PostgresOrderRepository,
) -> None:
    results = await asyncio.gather(
        *(stocked.save(make_order(pizzas=7, phone=f"55512345{i:02d}")) for i in range(9)),
        return_exceptions=True,
    )
    placed = [r for r in results if not isinstance(r, BaseException)]
    assert len(placed) == 7  # 7 x 7 = 49 of 50
    assert all(isinstance(r, OutOfStock) for r in results if isinstance(r, BaseException))
    pizzas = [ln.quantity for s in await stocked.list() for ln in s.lines if ln.sku == "pizza"]
    assert sum(pizzas) == 49
    assert await stocked.available("pizza") == 1


async def test_a_retried_save_reserves_nothing_again(
    stocked: SqliteOrderRepository | PostgresOrderRepository,
) -> None:
    order = make_order(pizzas=30)
    first = await stocked.save(order)
    assert await stocked.save(order) == first
    assert await stocked.available("pizza") == 20
    with pytest.raises(OutOfStock):
        await stocked.save(make_order(pizzas=21))
    assert await stocked.available("pizza") == 20  # the refused order took nothing
    assert len(await stocked.list()) == 1


async def test_two_first_writers_on_a_new_file_never_see_a_locked_database(
    tmp_path: Path,
) -> None:
    # Two sessions' repositories write to one new file at once: switching it to WAL
    # used to fail at once with "database is locked" about one time in a hundred.
    for attempt in range(150):
        path = tmp_path / f"orders-{attempt}.sqlite3"
        repos = [SqliteOrderRepository(path, stock=STOCK) for _ in range(2)]
        results = await asyncio.gather(
            *(repo.save(make_order(pizzas=50)) for repo in repos), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["OutOfStock", "StoredOrder"], (
            attempt, results)
