"""Order rules: adding, merging and removing lines, stock, totals, readiness."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.orderline.address import parse_address
from pipelines.orderline.catalog import DEFAULT_CATALOG, Product
from pipelines.orderline.order import Order, OrderError

PIZZA = DEFAULT_CATALOG.get("pizza")
SALAD = DEFAULT_CATALOG.get("salad")
ICE_CREAM = DEFAULT_CATALOG.get("ice cream")


def test_lines_merge_and_totals_are_exact_decimals() -> None:
    order = Order()
    order.add(PIZZA, 2)
    order.add(ICE_CREAM)
    line = order.add(PIZZA, 1)
    assert line.quantity == 3
    assert [(ln.sku, ln.quantity) for ln in order.lines] == [("pizza", 3), ("ice_cream", 1)]
    assert order.total == Decimal("33.00")
    assert str(order.total) == "33.00"
    assert order.item_count == 4


def test_each_order_has_its_own_idempotency_key() -> None:
    first, second = Order(), Order()
    assert first.idempotency_key != second.idempotency_key
    assert len(first.idempotency_key) == 32


@pytest.mark.parametrize("quantity", [0, -1, -50])
def test_non_positive_quantities_are_refused(quantity: int) -> None:
    order = Order()
    with pytest.raises(OrderError, match=f"^{quantity} is not a quantity .* how many pizzas"):
        order.add(PIZZA, quantity)
    assert order.lines == []


def test_more_than_the_stock_is_refused_with_what_is_possible() -> None:
    order = Order()
    with pytest.raises(OrderError, match="we only have 40 ice creams in stock"):
        order.add(ICE_CREAM, 41)
    order.add(ICE_CREAM, 38)
    with pytest.raises(OrderError, match="already has 38; at most 2 more can be added"):
        order.add(ICE_CREAM, 3)
    order.add(ICE_CREAM, 2)
    assert order.line_for("ice_cream").quantity == 40  # type: ignore[union-attr]


def test_a_sold_out_product_says_so() -> None:
    gone = Product(sku="soup", name="soup", price=Decimal(4), stock=0)
    with pytest.raises(OrderError, match="soups are sold out"):
        Order().add(gone)


def test_remove_some_all_or_nothing() -> None:
    order = Order()
    order.add(PIZZA, 3)
    order.add(SALAD, 1)
    assert order.remove(PIZZA, 2) == 1
    assert order.total == Decimal("15.00")
    with pytest.raises(OrderError, match=r"only 1 pizza\. Ask whether to remove all"):
        order.remove(PIZZA, 2)
    with pytest.raises(OrderError, match="0 is not a quantity that can be removed"):
        order.remove(PIZZA, 0)
    assert order.remove(SALAD) == 0
    assert [ln.sku for ln in order.lines] == ["pizza"]
    with pytest.raises(OrderError, match="no ice cream, so there is nothing to remove"):
        order.remove(ICE_CREAM)


def test_missing_parts_are_named_until_the_order_is_ready() -> None:
    order = Order()
    assert order.missing() == ["items", "phone number", "delivery address"]
    with pytest.raises(OrderError, match="no items, phone number and delivery address"):
        order.check_ready()
    order.add(SALAD)
    order.set_phone("5551234567")
    with pytest.raises(OrderError, match=r"no delivery address\. Ask the caller for it first"):
        order.check_ready()
    order.set_address(parse_address("12 Main Street, Springfield"))
    order.check_ready()
    assert order.missing() == []


def test_a_placed_order_no_longer_changes() -> None:
    order = Order()
    order.add(PIZZA)
    order.placed_id = "ORD-1"
    for change in (
        lambda: order.add(PIZZA),
        lambda: order.remove(PIZZA),
        lambda: order.set_phone("5551234567"),
        lambda: order.set_address(parse_address("1 A Street, Town")),
    ):
        with pytest.raises(OrderError, match="ORD-1 has already been placed"):
            change()
    assert order.line_for("pizza").quantity == 1  # type: ignore[union-attr]


def test_summary_text_and_data() -> None:
    order = Order()
    assert order.summary_text() == "The order is empty."
    order.add(PIZZA, 2)
    order.add(SALAD)
    order.add(ICE_CREAM, 3)
    assert order.summary_text() == (
        "2 pizzas at $10.00 each, 1 salad at $5.00 and 3 ice creams at $3.00 each."
        " Total $34.00."
    )
    data = order.summary()
    assert data["lines"][0] == {
        "product": "pizza", "quantity": 2, "unit_price": "10.00", "line_total": "20.00"
    }
    assert data["total"] == "34.00"
    assert data["item_count"] == 6
    assert data["missing"] == ["phone number", "delivery address"]


_PRODUCTS = [PIZZA, SALAD, ICE_CREAM]


@given(st.lists(st.tuples(st.sampled_from(_PRODUCTS), st.integers(-3, 60),
                          st.booleans()), max_size=30))
def test_any_sequence_of_changes_keeps_stock_and_total_consistent(
    changes: list[tuple[Product, int, bool]],
) -> None:
    order = Order()
    expected: dict[str, int] = {}
    for product, quantity, removing in changes:
        has = expected.get(product.sku, 0)
        try:
            if removing:
                order.remove(product, quantity)
                expected[product.sku] = has - quantity
            else:
                order.add(product, quantity)
                expected[product.sku] = has + quantity
        except OrderError:
            pass
    expected = {sku: n for sku, n in expected.items() if n}
    assert {ln.sku: ln.quantity for ln in order.lines} == expected
    for line in order.lines:
        assert 0 < line.quantity <= DEFAULT_CATALOG.get(line.sku).stock
    assert order.total == sum(
        (DEFAULT_CATALOG.get(sku).price * n for sku, n in expected.items()), Decimal(0)
    )
