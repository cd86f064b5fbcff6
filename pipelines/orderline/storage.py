"""Where placed orders go: a small repository interface, SQLite or PostgreSQL.

``save`` is idempotent by the order's ``idempotency_key``: the row is
inserted with ``ON CONFLICT (idempotency_key) DO NOTHING`` and then read
back by that key, so a retried ``place_order`` (the model repeating a tool
call, a second call racing the first) returns the id stored the first time
and never inserts twice. The first write wins.

Stock is reserved in the same transaction as the insert: given the
catalog's stock levels, a repository keeps a ``<table>_stock`` table and
takes each line's quantity from it with ``UPDATE ... SET available =
available - n WHERE available >= n``. Two calls racing for the last pizzas
cannot both get them: the database serialises the two updates, the second
finds too few left, its whole transaction (the order row included) rolls
back and ``OutOfStock`` says how many are left. A retried save of an order
already stored reserves nothing again.

Both repositories open a connection per operation: an order line stores a
few orders per call, and a connection that outlives one event loop (tests,
the CLI's ``asyncio.run``) or one thread (``asyncio.to_thread``) is a bug
waiting to happen. The schema is created on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from pipeflow.errors import ConfigError, LocalError, RemoteError

from .order import Order, OrderLine

__all__ = [
    "OrderRepository",
    "OutOfStock",
    "PostgresOrderRepository",
    "SqliteOrderRepository",
    "StoredOrder",
    "open_repository",
]

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_COLUMNS = "order_id, idempotency_key, created_at, currency, total, phone, address, lines"
_lines_decoder = msgspec.json.Decoder(list[OrderLine])


class OutOfStock(Exception):
    """A line asks for more than is left; nothing of the order was stored.

    Attributes:
        sku: the product that ran short.
        available: how many are left.
        wanted: how many the order asked for.
    """

    def __init__(self, sku: str, available: int, wanted: int) -> None:
        super().__init__(f"only {available} of {sku!r} left, the order asks for {wanted}")
        self.sku = sku
        self.available = available
        self.wanted = wanted


class StoredOrder(msgspec.Struct, kw_only=True, frozen=True):
    """A placed order as stored."""

    order_id: str
    """Id the caller can quote ("ORD-1A2B3C4D")."""
    idempotency_key: str
    """The order's key; one stored row per key."""
    created_at: datetime
    """When it was first stored (UTC)."""
    currency: str
    """Currency of the prices."""
    total: Decimal
    """Sum of the line totals."""
    phone: str
    """Normalised phone number."""
    address: str
    """Delivery address on one line."""
    lines: list[OrderLine]
    """What was ordered, with the prices at the time."""

    def items_text(self) -> str:
        """``"2 pizzas, 1 salad"``."""
        return ", ".join(line.text() for line in self.lines)


@runtime_checkable
class OrderRepository(Protocol):
    """Stores placed orders; ``save`` must be idempotent by the idempotency key."""

    async def save(self, order: Order) -> StoredOrder:
        """Store ``order`` once; saving the same key again returns the first stored order."""
        ...

    async def get(self, order_id: str) -> StoredOrder | None:
        """The stored order with this id, or None."""
        ...

    async def list(self) -> list[StoredOrder]:
        """Every stored order, oldest first."""
        ...


def _new_order_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:8].upper()}"


def _row_values(order: Order) -> tuple[Any, ...]:
    return (
        _new_order_id(),
        order.idempotency_key,
        datetime.now(UTC),
        order.currency,
        order.total,
        order.phone,
        order.address.one_line() if order.address else "",
        msgspec.json.encode(order.lines).decode(),
    )


def _stored(row: tuple[Any, ...]) -> StoredOrder:
    order_id, key, created, currency, total, phone, address, lines = row
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return StoredOrder(
        order_id=order_id,
        idempotency_key=key,
        created_at=created,
        currency=currency,
        total=Decimal(str(total)),
        phone=phone,
        address=address,
        lines=_lines_decoder.decode(lines),
    )


class SqliteOrderRepository:
    """Orders in a SQLite file (WAL mode), through the standard library.

    Calls run in a worker thread (``asyncio.to_thread``) so the event loop
    never waits on the disk.

    Args:
        path: the database file; its folder is created if needed.
        table: table name (letters, digits, underscores).
        stock: stock level per sku the first time a sku is reserved (the
            catalog's); None reserves nothing.

    Raises:
        ConfigError: a bad table name or an in-memory path.
    """

    def __init__(
        self, path: str | Path, table: str = "orders", stock: Mapping[str, int] | None = None
    ) -> None:
        if str(path) in ("", ":memory:"):
            raise ConfigError(
                "orders database: an in-memory SQLite database would lose every order;"
                " give a file path"
            )
        self.path = Path(path)
        self.table = _check_table(table)
        self.stock = dict(stock) if stock is not None else None
        self._ready = False
        self._schema_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteOrderRepository({str(self.path)!r})"

    async def save(self, order: Order) -> StoredOrder:
        """Store ``order`` once (see the module notes); returns what is stored.

        Raises:
            OutOfStock: a line asks for more than is left (nothing stored).
            LocalError: the database cannot be written.
        """
        return await asyncio.to_thread(self._save, order)

    async def get(self, order_id: str) -> StoredOrder | None:
        """The stored order with this id, or None.

        Raises:
            LocalError: the database cannot be read.
        """
        rows = await asyncio.to_thread(self._select, "order_id = ?", (order_id,))
        return rows[0] if rows else None

    async def list(self) -> list[StoredOrder]:
        """Every stored order, oldest first.

        Raises:
            LocalError: the database cannot be read.
        """
        return await asyncio.to_thread(self._select, "1 = 1", ())

    def _save(self, order: Order) -> StoredOrder:
        values = list(_row_values(order))
        values[2] = values[2].isoformat()
        values[4] = str(values[4])
        with self._connect() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time: the stock check holds
            inserted = conn.execute(
                f'INSERT INTO "{self.table}" ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
                " ON CONFLICT (idempotency_key) DO NOTHING",
                values,
            ).rowcount
            if inserted and self.stock is not None:
                self._reserve(conn, order.lines)
            row = conn.execute(
                f'SELECT {_COLUMNS} FROM "{self.table}" WHERE idempotency_key = ?',
                (order.idempotency_key,),
            ).fetchone()
        return _stored(row)

    def _reserve(self, conn: sqlite3.Connection, lines: list[OrderLine]) -> None:
        table = f'"{self.table}_stock"'
        for line in lines:
            if self.stock is None or line.sku not in self.stock:
                continue  # a product without a stock level is not limited
            conn.execute(
                f"INSERT INTO {table} (sku, available) VALUES (?, ?) ON CONFLICT (sku) DO NOTHING",
                (line.sku, self.stock[line.sku]),
            )
            taken = conn.execute(
                f"UPDATE {table} SET available = available - ? WHERE sku = ? AND available >= ?",
                (line.quantity, line.sku, line.quantity),
            ).rowcount
            if not taken:
                (left,) = conn.execute(
                    f"SELECT available FROM {table} WHERE sku = ?", (line.sku,)
                ).fetchone()
                raise OutOfStock(line.sku, int(left), line.quantity)

    async def available(self, sku: str) -> int | None:
        """How many of ``sku`` are left (None: not limited)."""
        return await asyncio.to_thread(self._available, sku)

    def _available(self, sku: str) -> int | None:
        with self._connect() as conn:
            row = conn.execute(
                f'SELECT available FROM "{self.table}_stock" WHERE sku = ?', (sku,)
            ).fetchone()
        return int(row[0]) if row else (self.stock or {}).get(sku)

    def _select(self, where: str, params: tuple[Any, ...]) -> list[StoredOrder]:
        with self._connect() as conn:
            rows = conn.execute(
                f'SELECT {_COLUMNS} FROM "{self.table}" WHERE {where} ORDER BY created_at, rowid',
                params,
            ).fetchall()
        return [_stored(row) for row in rows]

    @contextlib.contextmanager
    def _connect(self) -> Any:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LocalError(f"Cannot open the orders database {self.path}: {exc}") from exc
        try:
            if not self._ready:
                with self._schema_lock:
                    _use_wal(conn)
                    conn.execute(
                        f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
                        " order_id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE,"
                        " created_at TEXT NOT NULL, currency TEXT NOT NULL, total TEXT NOT NULL,"
                        " phone TEXT NOT NULL, address TEXT NOT NULL, lines TEXT NOT NULL)"
                    )
                    conn.execute(
                        f'CREATE TABLE IF NOT EXISTS "{self.table}_stock" ('
                        " sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0))"
                    )
                    self._ready = True
            yield conn
        except sqlite3.Error as exc:
            raise LocalError(f"The orders database {self.path} failed: {exc}") from exc
        finally:
            conn.close()


def _use_wal(conn: sqlite3.Connection, wait_s: float = 10.0) -> None:
    """Switch the file to WAL (it stays so). The switch needs the file to itself and
    does not wait on the busy timeout: another connection's first write racing it
    gets "database is locked" at once, so it is retried for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class PostgresOrderRepository:
    """Orders in PostgreSQL, through psycopg 3 (async).

    Args:
        dsn: a ``postgresql://`` URL or a libpq connection string.
        table: table name, optionally ``schema.table``.
        stock: stock level per sku the first time a sku is reserved (the
            catalog's); None reserves nothing.

    Raises:
        ConfigError: psycopg is not installed or the table name is bad.
    """

    def __init__(
        self, dsn: str, table: str = "orders", stock: Mapping[str, int] | None = None
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "orders database: PostgreSQL needs psycopg; install pipeflow[postgres]"
            ) from exc
        self.dsn = dsn
        parts = table.split(".")
        if len(parts) > 2:
            raise ConfigError(f"orders table {table!r}: use 'table' or 'schema.table'")
        self._names = tuple(_check_table(p) for p in parts)
        self.table = table
        self.stock = dict(stock) if stock is not None else None
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresOrderRepository({self.where()!r})"

    def where(self) -> str:
        """Host, port and database, for messages (never the password)."""
        from psycopg.conninfo import conninfo_to_dict

        try:
            info = conninfo_to_dict(self.dsn)
        except Exception:
            return "the configured PostgreSQL"
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    async def save(self, order: Order) -> StoredOrder:
        """Store ``order`` once (see the module notes); returns what is stored.

        Raises:
            OutOfStock: a line asks for more than is left (nothing stored).
            RemoteError: PostgreSQL cannot be reached or refuses the write.
        """
        from psycopg import sql

        async with self._connect() as conn:  # one transaction: insert and reserve, or neither
            cursor = await conn.execute(
                sql.SQL(
                    "INSERT INTO {} ({}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
                    " ON CONFLICT (idempotency_key) DO NOTHING"
                ).format(self._ident(), sql.SQL(_COLUMNS)),
                _row_values(order),
            )
            if cursor.rowcount and self.stock is not None:
                await self._reserve(conn, order.lines)
            rows = await self._fetch(conn, "idempotency_key = %s", (order.idempotency_key,))
        return rows[0]

    async def get(self, order_id: str) -> StoredOrder | None:
        """The stored order with this id, or None.

        Raises:
            RemoteError: PostgreSQL cannot be reached.
        """
        async with self._connect() as conn:
            rows = await self._fetch(conn, "order_id = %s", (order_id,))
        return rows[0] if rows else None

    async def list(self) -> list[StoredOrder]:
        """Every stored order, oldest first.

        Raises:
            RemoteError: PostgreSQL cannot be reached.
        """
        async with self._connect() as conn:
            return await self._fetch(conn, "TRUE", ())

    async def available(self, sku: str) -> int | None:
        """How many of ``sku`` are left (None: not limited)."""
        from psycopg import sql

        async with self._connect() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT available FROM {} WHERE sku = %s").format(self._stock_ident()),
                (sku,),
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else (self.stock or {}).get(sku)

    async def _reserve(self, conn: Any, lines: list[OrderLine]) -> None:
        from psycopg import sql

        table = self._stock_ident()
        for line in lines:
            if self.stock is None or line.sku not in self.stock:
                continue  # a product without a stock level is not limited
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (sku, available) VALUES (%s, %s) ON CONFLICT (sku) DO NOTHING"
                ).format(table),
                (line.sku, self.stock[line.sku]),
            )
            # The row lock makes racing reservations wait; READ COMMITTED then
            # re-checks ``available >= n`` against the committed value.
            cursor = await conn.execute(
                sql.SQL(
                    "UPDATE {} SET available = available - %s WHERE sku = %s AND available >= %s"
                ).format(table),
                (line.quantity, line.sku, line.quantity),
            )
            if not cursor.rowcount:
                cursor = await conn.execute(
                    sql.SQL("SELECT available FROM {} WHERE sku = %s").format(table), (line.sku,)
                )
                row = await cursor.fetchone()
                raise OutOfStock(line.sku, int(row[0]) if row else 0, line.quantity)

    def _ident(self) -> Any:
        from psycopg import sql

        return sql.Identifier(*self._names)

    def _stock_ident(self) -> Any:
        from psycopg import sql

        return sql.Identifier(*self._names[:-1], f"{self._names[-1]}_stock")

    async def _fetch(self, conn: Any, where: str, params: tuple[Any, ...]) -> list[StoredOrder]:
        from psycopg import sql

        columns = _COLUMNS.replace("lines", "lines::text")
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY created_at, order_id").format(
                sql.SQL(columns), self._ident(), sql.SQL(where)
            ),
            params,
        )
        return [_stored(row) for row in await cursor.fetchall()]

    @contextlib.asynccontextmanager
    async def _connect(self) -> Any:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=10)
        except psycopg.Error as exc:
            raise RemoteError(f"Cannot connect to PostgreSQL at {self.where()}: {exc}") from exc
        try:
            async with conn:  # commits on success, rolls back on error, then closes
                if not self._ready:
                    await self._create_schema(conn)
                yield conn
        except psycopg.Error as exc:
            raise RemoteError(f"PostgreSQL at {self.where()} failed: {exc}") from exc

    async def _create_schema(self, conn: Any) -> None:
        import psycopg
        from psycopg import sql

        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (order_id text PRIMARY KEY,"
            " idempotency_key text NOT NULL UNIQUE, created_at timestamptz NOT NULL,"
            " currency text NOT NULL, total numeric(12, 2) NOT NULL, phone text NOT NULL,"
            " address text NOT NULL, lines jsonb NOT NULL)"
        ).format(self._ident())
        stock = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (sku text PRIMARY KEY,"
            " available integer NOT NULL CHECK (available >= 0))"
        ).format(self._stock_ident())
        try:
            async with conn.transaction():
                await conn.execute(statement)
                await conn.execute(stock)
        except psycopg.errors.UniqueViolation:
            pass  # another session created it at the same moment
        self._ready = True


def open_repository(
    url_or_path: str | Path, table: str = "orders", stock: Mapping[str, int] | None = None
) -> OrderRepository:
    """The repository a database setting names.

    Args:
        url_or_path: ``postgresql://...`` (or ``postgres://``) for PostgreSQL;
            ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a plain
            file path for SQLite.
        table: the table orders go in.
        stock: stock level per sku (the catalog's), reserved as orders are stored.

    Raises:
        ConfigError: an unknown scheme, an empty setting, or a bad table name.
    """
    text = str(url_or_path).strip()
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresOrderRepository(text, table, stock)
    if text.startswith("sqlite:///"):
        return SqliteOrderRepository(text[len("sqlite:///") :], table, stock)
    if not text:
        raise ConfigError("orders database: the setting is empty; give a file path or a URL")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        raise ConfigError(
            f"orders database {text.split('@')[-1]!r}: unknown scheme {scheme.group(1)!r};"
            " use postgresql://..., sqlite:///path or a file path"
        )
    return SqliteOrderRepository(text, table, stock)


def _check_table(name: str) -> str:
    if not _TABLE.match(name):
        raise ConfigError(
            f"orders table {name!r}: use letters, digits and underscores (at most 63),"
            " not starting with a digit"
        )
    return name
