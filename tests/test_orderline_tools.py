"""The order line's tools, called the way the tools stage calls them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeflow.errors import ConfigError
from pipeflow.frames import ToolCall
from pipeflow.tools import FunctionCall, RunContext, ToolSet, invoke
from pipelines.orderline import tools as orderline
from pipelines.orderline.catalog import DEFAULT_CATALOG, Catalog
from pipelines.orderline.order import Order
from pipelines.orderline.storage import (
    PostgresOrderRepository,
    SqliteOrderRepository,
    StoredOrder,
)

TOOLS = ToolSet.from_refs(["pipelines.orderline.tools"])


class Caller:
    """One session's userdata and a way to call its tools by name."""

    def __init__(self, userdata: dict[str, Any], session_id: str = "") -> None:
        self.userdata = userdata
        self.session_id = session_id
        self.calls = 0

    async def __call__(self, name: str, **arguments: Any) -> dict[str, Any]:
        self.calls += 1
        call = ToolCall(call_id=f"call_{self.calls}", name=name, arguments=json.dumps(arguments))
        context: RunContext[dict[str, Any]] = RunContext(
            call_id=call.call_id,
            function_call=FunctionCall(name=name, arguments=call.arguments),
            userdata=self.userdata,
            session_id=self.session_id,
        )
        result = await invoke(TOOLS, call, context, timeout_s=10)
        assert not result.is_error, result.output
        return json.loads(result.output)


@pytest.fixture
def caller(tmp_path: Path) -> Caller:
    userdata: dict[str, Any] = {}
    orderline.setup(userdata, str(tmp_path))
    return Caller(userdata)


def stored_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT order_id, total, phone, address, lines FROM orders").fetchall()


def test_the_module_offers_the_order_line_tools() -> None:
    assert TOOLS.names() == [
        "list_products", "get_product_info", "add_to_order", "remove_from_order",
        "set_quantity", "summarize_order", "set_phone", "set_address", "place_order",
    ]
    for schema in TOOLS.to_openai_format():
        assert "ctx" not in schema["parameters"]["properties"]
    add = TOOLS["add_to_order"].parameters
    assert add["required"] == ["product"]
    assert add["properties"]["quantity"] == {
        "type": "integer", "description": "How many to add", "default": 1
    }


async def test_a_whole_call_places_one_stored_order(caller: Caller, tmp_path: Path) -> None:
    info = await caller("get_product_info", product="Pizzas")
    assert info["ok"] and info["product"]["price"] == "10.00"
    assert info["message"].startswith("Pizza: $10.00, 50 in stock.")

    added = await caller("add_to_order", product="pizzas", quantity=2)
    assert added == {**added, "ok": True, "message": "Added 2 pizzas. 2 pizzas at $10.00 each."
                     " Total $20.00."}
    await caller("add_to_order", product="gelato")
    await caller("add_to_order", product="salad", quantity=3)
    removed = await caller("remove_from_order", product="salads", quantity=2)
    assert removed["message"].startswith("Removed 2 salads.")

    phone = await caller("set_phone", phone="five five five, one two three, four five six seven")
    assert phone["phone"] == "5551234567"
    assert phone["message"] == "Phone number set to five five five, one two three, four five six"\
        " seven."
    address = await caller("set_address", address="12 Main Street, Springfield")
    assert address["address"] == "12 Main Street, Springfield"

    summary = await caller("summarize_order")
    assert summary["message"] == (
        "2 pizzas at $10.00 each, 1 ice cream at $3.00 and 1 salad at $5.00. Total $28.00."
        " Phone: five five five, one two three, four five six seven."
        " Delivery to 12 Main Street, Springfield."
    )
    assert summary["order"]["missing"] == []

    placed = await caller("place_order")
    assert placed["ok"]
    assert placed["total"] == "28.00"
    assert placed["phone"] == "5551234567"
    assert placed["address"] == "12 Main Street, Springfield"
    assert [(ln["product"], ln["quantity"]) for ln in placed["lines"]] == [
        ("pizza", 2), ("ice cream", 1), ("salad", 1)
    ]
    assert placed["message"] == (
        f"Order {placed['order_id']} is placed: 2 pizzas, 1 ice cream, 1 salad, total $28.00."
        " It will be delivered to 12 Main Street, Springfield."
    )
    rows = stored_rows(tmp_path / "orders.sqlite3")
    assert [row[:4] for row in rows] == [
        (placed["order_id"], "28.00", "5551234567", "12 Main Street, Springfield")
    ]
    assert [(ln["sku"], ln["quantity"]) for ln in json.loads(rows[0][4])] == [
        ("pizza", 2), ("ice_cream", 1), ("salad", 1)
    ]
    stored = caller.userdata["placed"]
    assert isinstance(stored, StoredOrder) and stored.order_id == placed["order_id"]


async def test_a_retried_place_order_returns_the_same_order_and_one_row(
    caller: Caller, tmp_path: Path
) -> None:
    await caller("add_to_order", product="pie")
    await caller("set_phone", phone="+1 (555) 123-4567")
    await caller("set_address", address="7 Elm Road Shelbyville")
    first = await caller("place_order")
    second = await caller("place_order")
    assert first["ok"] and second["ok"]
    assert second["order_id"] == first["order_id"]
    assert len(stored_rows(tmp_path / "orders.sqlite3")) == 1
    # The placed order is closed to changes; the agent is told so.
    late = await caller("add_to_order", product="salad")
    assert late["ok"] is False
    assert late["message"] == (
        f"Order {first['order_id']} has already been placed and can no longer be changed."
    )


async def test_a_retried_place_order_on_postgres_stores_one_row(
    postgres_dsn: str, tmp_path: Path
) -> None:
    import uuid

    import psycopg

    table = f"orders_test_{uuid.uuid4().hex[:12]}"
    userdata: dict[str, Any] = {}
    orderline.setup_userdata(userdata, postgres_dsn, str(tmp_path), table=table)
    assert isinstance(userdata["orders"], PostgresOrderRepository)
    caller = Caller(userdata)
    try:
        await caller("add_to_order", product="ice-cream", quantity=4)
        await caller("set_phone", phone="555 123 4567")
        await caller("set_address", address="Hauptstrasse 5, 10115 Berlin")
        ids = {(await caller("place_order"))["order_id"] for _ in range(2)}
        with psycopg.connect(postgres_dsn) as conn:
            rows = conn.execute(f'SELECT order_id, total FROM "{table}"').fetchall()
        assert rows == [(ids.pop(), Decimal("12.00"))]
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_stock"')


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"product": "burger"}, "Sorry, we don't have 'burger'. We have pizza, salad and ice"
         " cream."),
        ({"product": "pizza", "quantity": 0}, "0 is not a quantity that can be ordered."),
        ({"product": "pizza", "quantity": -2}, "-2 is not a quantity that can be ordered."),
        ({"product": "pizza", "quantity": 51}, "Sorry, we only have 50 pizzas in stock."),
    ],
)
async def test_add_to_order_refusals_are_sayable_results(
    caller: Caller, arguments: dict[str, Any], message: str
) -> None:
    result = await caller("add_to_order", **arguments)
    assert result["ok"] is False
    assert result["message"].startswith(message)
    assert result["order"]["lines"] == []


async def test_refusals_of_the_other_tools(caller: Caller) -> None:
    cases = [
        ("get_product_info", {"product": "sushi"}, "Sorry, we don't have 'sushi'."),
        ("remove_from_order", {"product": "pizza"}, "The order has no pizza"),
        ("set_phone", {"phone": "555 12"}, "That phone number has only 5 digits; 5 are missing"),
        ("set_phone", {"phone": "555 1234"}, "That phone number has only 7 digits; 3 are"),
        ("set_phone", {"phone": "call me maybe"}, "The phone number has 'call'"),
        ("set_address", {"address": "Main Street"}, "The address 'Main Street' is missing the"
         " house number and city or postcode."),
    ]
    for name, arguments, message in cases:
        result = await caller(name, **arguments)
        assert result["ok"] is False, name
        assert result["message"].startswith(message), result["message"]
    assert caller.userdata["order"].phone == ""
    assert caller.userdata["order"].address is None


async def test_an_empty_order_is_not_summarised(caller: Caller) -> None:
    result = await caller("summarize_order")
    assert result["ok"] is False
    assert result["reason"] == "The order is empty: nothing has been ordered yet."


async def test_set_quantity_changes_a_line_to_the_number_said(caller: Caller) -> None:
    await caller("add_to_order", product="pizza", quantity=2)
    result = await caller("set_quantity", product="pizzas", quantity=5)
    assert result["ok"] and result["message"].startswith("Now 5 pizzas.")
    assert caller.userdata["order"].lines[0].quantity == 5
    result = await caller("set_quantity", product="pizza", quantity=1)
    assert caller.userdata["order"].lines[0].quantity == 1
    result = await caller("set_quantity", product="salad", quantity=3)  # a new line
    assert [line.quantity for line in caller.userdata["order"].lines] == [1, 3]
    result = await caller("set_quantity", product="salad", quantity=0)
    assert result["message"].startswith("Removed the salad.")
    assert [line.sku for line in caller.userdata["order"].lines] == ["pizza"]
    result = await caller("set_quantity", product="pizza", quantity=999)
    assert result["ok"] is False and caller.userdata["order"].lines[0].quantity == 1


async def test_a_refusal_has_a_reason_to_say_to_the_caller(caller: Caller) -> None:
    result = await caller("set_phone", phone="555 1234")
    assert "Ask the caller" in result["message"]
    assert result["reason"] == ("That phone number has only 7 digits; 3 are missing. A phone "
                                "number has 10 digits with the area code.")


async def test_an_address_in_spoken_words_is_stored_as_written(caller: Caller) -> None:
    result = await caller("set_address", address="forty two oak avenue riverside")
    assert result["ok"] and result["address"] == "42 Oak Avenue, Riverside"
    result = await caller("set_address", address="Twelve Main Street, Springfield")
    assert result["address"] == "12 Main Street, Springfield"


async def test_place_order_says_what_is_missing(caller: Caller, tmp_path: Path) -> None:
    result = await caller("place_order")
    assert result["ok"] is False
    assert result["missing"] == ["items", "phone number", "delivery address"]
    await caller("add_to_order", product="salad")
    await caller("set_phone", phone="5551234567")
    result = await caller("place_order")
    assert result["missing"] == ["delivery address"]
    assert result["message"] == ("The order cannot be placed yet: it has no delivery address."
                                 " Ask the caller for it first.")
    assert not (tmp_path / "orders.sqlite3").exists()


async def test_a_storage_failure_is_a_sayable_result(caller: Caller, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    caller.userdata["orders"] = SqliteOrderRepository(blocker / "orders.sqlite3")
    await caller("add_to_order", product="salad")
    await caller("set_phone", phone="5551234567")
    await caller("set_address", address="12 Main Street, Springfield")
    result = await caller("place_order")
    assert result == {"ok": False, "message": "The order could not be saved just now. Apologise"
                      " and try placing it again."}
    assert caller.userdata["order"].placed_id == ""
    del caller.userdata["orders"]
    result = await caller("place_order")
    assert result["ok"] is False and "cannot be stored right now" in result["message"]


async def test_list_products_reads_the_menu(caller: Caller) -> None:
    result = await caller("list_products")
    assert result["message"] == "We have pizza at $10.00, salad at $5.00 and ice cream at $3.00."
    assert [p["in_stock"] for p in result["products"]] == [50, 100, 40]


async def test_tools_work_without_setup_until_an_order_is_placed() -> None:
    caller = Caller({})
    assert (await caller("add_to_order", product="pizza"))["ok"]
    assert isinstance(caller.userdata["order"], Order)
    assert caller.userdata["catalog"] is DEFAULT_CATALOG


def test_setup_picks_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(orderline.DB_ENV, raising=False)
    userdata: dict[str, Any] = {}
    orderline.setup(userdata, str(tmp_path))
    assert userdata["orders"].path == tmp_path / "orders.sqlite3"
    assert isinstance(userdata["order"], Order) and userdata["catalog"] is DEFAULT_CATALOG

    userdata = {"db": f"sqlite:///{tmp_path}/from_yaml.db"}
    orderline.setup(userdata, str(tmp_path))
    assert userdata["orders"].path == tmp_path / "from_yaml.db"

    monkeypatch.setenv(orderline.DB_ENV, "postgresql://shop@127.0.0.1/test")
    userdata = {"db": ""}
    orderline.setup(userdata, str(tmp_path))
    assert isinstance(userdata["orders"], PostgresOrderRepository)

    with pytest.raises(ConfigError, match="unknown scheme 'redis'"):
        orderline.setup({"db": "redis://127.0.0.1"}, str(tmp_path))


async def test_setup_with_a_catalog_from_yaml(tmp_path: Path) -> None:
    userdata: dict[str, Any] = {"catalog": {"currency": "EUR", "products": [
        {"sku": "soup", "name": "soup", "price": "4.50", "stock": 2},
    ]}}
    orderline.setup_userdata(userdata, None, str(tmp_path))
    assert isinstance(userdata["catalog"], Catalog)
    caller = Caller(userdata)
    assert (await caller("add_to_order", product="soups", quantity=2))["message"] == (
        "Added 2 soups. 2 soups at €4.50 each. Total €9.00."
    )
    assert (await caller("add_to_order", product="pizza"))["ok"] is False


async def test_summary_hook_reports_the_stored_order(caller: Caller) -> None:
    assert orderline.summary(caller.userdata) == {
        "order": "not placed (missing: items, phone number, delivery address)"
    }
    await caller("add_to_order", product="pizza", quantity=2)
    await caller("set_phone", phone="five five five one two three four five six seven")
    assert orderline.summary(caller.userdata) == {
        "order": "not placed (missing: delivery address)",
        "so far": "2 pizzas at $10.00 each. Total $20.00.", "phone": "5551234567",
    }
    await caller("set_address", address="12 Main Street, Springfield")
    placed = await caller("place_order")
    lines = orderline.summary(caller.userdata)
    assert lines["order id"] == placed["order_id"]
    assert (lines["items"], lines["total"], lines["phone"]) == ("2 pizzas", "$20.00", "5551234567")
    assert lines["address"] == "12 Main Street, Springfield"
    assert "orders.sqlite3" in lines["orders stored in"]


async def test_two_calls_racing_for_the_last_pizzas_place_one_order(tmp_path: Path) -> None:
    # Two sessions on one database each try to order all 50 pizzas.
    callers = []
    for _ in range(2):
        userdata: dict[str, Any] = {}
        orderline.setup(userdata, str(tmp_path))
        callers.append(Caller(userdata))
    for one in callers:
        await one("add_to_order", product="pizza", quantity=50)
        await one("set_phone", phone="5551234567")
        await one("set_address", address="12 Main Street, Springfield")
    results = await asyncio.gather(*(one("place_order") for one in callers))
    assert sorted(r["ok"] for r in results) == [False, True]
    refused = next(r for r in results if not r["ok"])
    assert refused["message"].startswith(
        "Sorry, other orders came in first and there are none left; nothing was placed."
    )
    assert len(stored_rows(tmp_path / "orders.sqlite3")) == 1
    # The refused caller's order is still open: fewer pizzas can still be ordered later.
    loser = next(one for one, r in zip(callers, results, strict=True) if not r["ok"])
    assert loser.userdata["order"].placed_id == ""


async def test_addresses_are_cleaned_and_bounded(caller: Caller) -> None:
    nul = await caller("set_address", address="12 Main\x00 Street,\x1b Springfield\t")
    assert nul["ok"] and nul["address"] == "12 Main Street, Springfield"
    long = await caller("set_address", address="12 Main Street, " + "Springfield" * 20_000)
    assert long["ok"] is False and "at most 200" in long["message"]
    assert caller.userdata["order"].address.one_line() == "12 Main Street, Springfield"


async def test_a_rerun_of_the_same_job_finds_the_order_its_first_run_stored(
    tmp_path: Path,
) -> None:
    # A worker died after place_order; the reclaimed job runs again with the same id.
    placed = []
    for _run in range(2):
        userdata: dict[str, Any] = {}
        orderline.setup(userdata, str(tmp_path))
        call = Caller(userdata, session_id="job-7f3a")
        await call("add_to_order", product="pizza", quantity=2)
        await call("set_phone", phone="5551234567")
        await call("set_address", address="12 Main Street, Springfield")
        placed.append(await call("place_order"))
    assert placed[0]["ok"] and placed[1]["ok"]
    assert placed[0]["order_id"] == placed[1]["order_id"]
    assert len(stored_rows(tmp_path / "orders.sqlite3")) == 1
    # Another session's order is its own.
    userdata = {}
    orderline.setup(userdata, str(tmp_path))
    other = Caller(userdata, session_id="job-other")
    await other("add_to_order", product="salad")
    await other("set_phone", phone="5551234567")
    await other("set_address", address="12 Main Street, Springfield")
    assert (await other("place_order"))["order_id"] != placed[0]["order_id"]
    assert len(stored_rows(tmp_path / "orders.sqlite3")) == 2


async def test_a_rerun_of_the_same_job_on_postgres_stores_one_order(
    postgres_dsn: str, tmp_path: Path
) -> None:
    import uuid

    import psycopg

    table = f"orders_test_{uuid.uuid4().hex[:12]}"
    try:
        ids = set()
        for _run in range(2):  # the first run, then the reclaimed job's rerun
            userdata: dict[str, Any] = {}
            orderline.setup_userdata(userdata, postgres_dsn, str(tmp_path), table=table)
            call = Caller(userdata, session_id="job-pg-rerun")
            await call("add_to_order", product="pizza", quantity=3)
            await call("set_phone", phone="555 123 4567")
            await call("set_address", address="Hauptstrasse 5, 10115 Berlin")
            ids.add((await call("place_order"))["order_id"])
        with psycopg.connect(postgres_dsn) as conn:
            rows = conn.execute(f'SELECT order_id FROM "{table}"').fetchall()
            (left,) = conn.execute(f'SELECT available FROM "{table}_stock"').fetchone()
        assert len(ids) == 1 and rows == [(ids.pop(),)]
        assert left == 47  # reserved once
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_stock"')
