"""The order line's tools, and the session setup they rely on.

Every tool answers with something the agent can say: ``{"ok": true,
"message": ..., ...fields}``, or ``{"ok": false, "message": ..., "reason":
...}`` when the caller asked for something the shop cannot do (an unknown
product, too many, a phone number with digits missing). Those are
conversation, not failures, so they are results rather than tool errors.
``message`` is written for a model (it may say what to ask next);
``reason`` is the same without those instructions, to say to the caller as
it is (the offline script does).

Session state lives in the userdata dict (made by ``setup_userdata``):

- ``"order"``: the ``Order`` being taken,
- ``"orders"``: the ``OrderRepository`` placed orders go to,
- ``"catalog"``: the ``Catalog`` (the default one when absent),
- ``"placed"``: the ``StoredOrder`` once placed.

Use them from YAML with ``tools: [pipelines.orderline.tools]`` and
``setup: pipelines.orderline.tools:setup``.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pipeflow.errors import PipeflowError
from pipeflow.tools import RunContext, tool

from .address import AddressError, from_speech, require_deliverable
from .catalog import (
    Catalog,
    UnknownProduct,
    catalog_from_userdata,
    format_money,
)
from .order import Order, OrderError
from .phone import PhoneError, normalize_phone, speak_phone
from .storage import OutOfStock, SqliteOrderRepository, StoredOrder, open_repository

__all__ = [
    "add_to_order",
    "get_product_info",
    "list_products",
    "place_order",
    "remove_from_order",
    "session_order_key",
    "set_address",
    "set_phone",
    "set_quantity",
    "setup",
    "setup_userdata",
    "summarize_order",
    "summary",
]

DB_ENV = "ORDERLINE_DB"
"""Environment variable naming the orders database when userdata has no ``db``."""


def setup_userdata(
    userdata: dict[str, Any], db: str | None, output_dir: str, table: str = "orders"
) -> dict[str, Any]:
    """Prepare a session: the catalog, the orders repository and an empty order.

    Args:
        userdata: the session's userdata dict, changed in place.
        db: ``postgresql://...``, ``sqlite:///path`` or a file path; None
            stores orders in ``<output_dir>/orders.sqlite3``.
        output_dir: the run's output folder.
        table: the table orders go in.

    Returns:
        ``userdata``.

    Raises:
        ConfigError: a bad database setting or catalog.
    """
    catalog = catalog_from_userdata(userdata.get("catalog"))
    userdata["catalog"] = catalog
    stock = {product.sku: product.stock for product in catalog}
    userdata["orders"] = (
        open_repository(db, table, stock)
        if db
        else SqliteOrderRepository(Path(output_dir) / "orders.sqlite3", table, stock)
    )
    userdata["order"] = Order(currency=catalog.currency)
    userdata.pop("placed", None)
    return userdata


def setup(userdata: dict[str, Any], output_dir: str) -> None:
    """The agent's ``setup`` hook: ``setup_userdata`` with the database from
    userdata's ``db`` (the YAML), else ``$ORDERLINE_DB``, else SQLite in ``output_dir``."""
    db = str(userdata.get("db") or os.environ.get(DB_ENV, "")) or None
    setup_userdata(userdata, db, output_dir)


def summary(userdata: dict[str, Any]) -> dict[str, str]:
    """The agent's ``summary`` hook: the stored order, for the end-of-run table."""
    placed: StoredOrder | None = userdata.get("placed")
    if placed is None:
        order = userdata.get("order")
        missing = ", ".join(order.missing()) if isinstance(order, Order) else "everything"
        lines = {"order": f"not placed (missing: {missing or 'the confirmation'})"}
        if isinstance(order, Order):
            # What the tools stored so far, so a call that stopped short shows it.
            if order.lines:
                lines["so far"] = order.summary_text()
            if order.phone:
                lines["phone"] = order.phone
            if order.address is not None:
                lines["address"] = order.address.one_line()
        return lines
    return {
        "order id": placed.order_id,
        "items": placed.items_text(),
        "total": format_money(placed.total, placed.currency),
        "phone": placed.phone,
        "address": placed.address,
        "orders stored in": repr(userdata.get("orders")),
    }


@tool
async def list_products(ctx: RunContext) -> dict[str, Any]:
    """List everything on the menu with prices."""
    catalog = _catalog(ctx)
    items = [f"{p.name} at {catalog.money(p.price)}" for p in catalog]
    return {
        "ok": True,
        "message": f"We have {_and(items)}.",
        "products": [catalog.describe(p) for p in catalog],
    }


@tool
async def get_product_info(
    product: Annotated[str, "Product name as the caller said it, e.g. 'pizza' or 'gelato'"],
    ctx: RunContext,
) -> dict[str, Any]:
    """Get the price, description and stock of one product."""
    catalog = _catalog(ctx)
    try:
        found = catalog.get(product)
    except UnknownProduct as exc:
        return _refuse(exc)
    stock = f"{found.stock} in stock" if found.stock else "sold out right now"
    return {
        "ok": True,
        "message": f"{found.name.capitalize()}: {catalog.money(found.price)}, {stock}."
        f" {found.description}".strip(),
        "product": catalog.describe(found),
    }


@tool
async def add_to_order(
    product: Annotated[str, "Product name as the caller said it"],
    ctx: RunContext,
    quantity: Annotated[int, "How many to add"] = 1,
) -> dict[str, Any]:
    """Add a product to the caller's order."""
    order = _order(ctx)
    try:
        found = _catalog(ctx).get(product)
        order.add(found, quantity)
    except (UnknownProduct, OrderError) as exc:
        return _refuse(exc, order)
    ctx.log_info("added %d x %s", quantity, found.sku)
    return _ok(f"Added {found.quantity_text(quantity)}. {order.summary_text()}", order)


@tool
async def remove_from_order(
    product: Annotated[str, "Product name as the caller said it"],
    ctx: RunContext,
    quantity: Annotated[int | None, "How many to remove; leave out to remove all of them"] = None,
) -> dict[str, Any]:
    """Remove a product, or some of it, from the caller's order."""
    order = _order(ctx)
    try:
        found = _catalog(ctx).get(product)
        line = order.line_for(found.sku)
        had = line.quantity if line else 0
        left = order.remove(found, quantity)
    except (UnknownProduct, OrderError) as exc:
        return _refuse(exc, order)
    removed = found.quantity_text(had - left)
    return _ok(f"Removed {removed}. {order.summary_text()}", order)


@tool
async def set_quantity(
    product: Annotated[str, "Product name as the caller said it"],
    quantity: Annotated[int, "How many the order should have in all; 0 removes the product"],
    ctx: RunContext,
) -> dict[str, Any]:
    """Set how many of a product the order has ("make that five pizzas")."""
    order = _order(ctx)
    try:
        found = _catalog(ctx).get(product)
        line = order.line_for(found.sku)
        had = line.quantity if line else 0
        if quantity < 0:
            raise OrderError(f"{quantity} is not a quantity. Ask how many"
                             f" {found.plural_name()} the caller wants.")
        if quantity > had:
            order.add(found, quantity - had)
        elif quantity < had:
            order.remove(found, had - quantity)
    except (UnknownProduct, OrderError) as exc:
        return _refuse(exc, order)
    done = f"Now {found.quantity_text(quantity)}." if quantity else f"Removed the {found.name}."
    return _ok(f"{done} {order.summary_text()}", order)


@tool
async def summarize_order(ctx: RunContext) -> dict[str, Any]:
    """Summarise the order: lines, total, phone, address and what is still missing."""
    order = _order(ctx)
    if not order.lines:
        return _refuse(OrderError("The order is empty: nothing has been ordered yet."
                                  " Ask the caller what they would like."), order)
    text = order.summary_text()
    if order.phone:
        text += f" Phone: {speak_phone(order.phone)}."
    if order.address is not None:
        text += f" Delivery to {order.address.one_line()}."
    missing = order.missing()
    if missing and order.lines:
        text += f" Still needed: {_and(missing)}."
    return _ok(text, order)


@tool
async def set_phone(
    phone: Annotated[str, "Phone number as the caller said it; digits may be words"],
    ctx: RunContext,
) -> dict[str, Any]:
    """Set the phone number for the order (validated and normalised)."""
    order = _order(ctx)
    try:
        number = normalize_phone(phone)
        order.set_phone(number)
    except (PhoneError, OrderError) as exc:
        return _refuse(exc, order)
    return {**_ok(f"Phone number set to {speak_phone(number)}.", order), "phone": number}


@tool
async def set_address(
    address: Annotated[str, "Delivery address on one line: house number, street, city or postcode"],
    ctx: RunContext,
) -> dict[str, Any]:
    """Set the delivery address for the order (checked to be complete enough to deliver)."""
    order = _order(ctx)
    try:
        parsed = require_deliverable(from_speech(address))
        order.set_address(parsed)
    except (AddressError, OrderError) as exc:
        return _refuse(exc, order)
    line = parsed.one_line()
    return {**_ok(f"Delivery address set to {line}.", order), "address": line}


@tool
async def place_order(ctx: RunContext) -> dict[str, Any]:
    """Place the order once the caller has confirmed the summary, phone and address."""
    order = _order(ctx)
    try:
        order.check_ready()
    except OrderError as exc:
        return {**_refuse(exc, order), "missing": order.missing()}
    repository = ctx.userdata.get("orders")
    if repository is None:
        ctx.log_error("no order repository in userdata; was the setup hook run?")
        return {"ok": False, "message": "Orders cannot be stored right now. Apologise and ask"
                " the caller to call back later."}
    if ctx.session_id:
        order.idempotency_key = session_order_key(ctx.session_id)
    try:
        # A snapshot: what is stored is what was confirmed, even if another
        # call changes the order while the write is in flight.
        stored = await repository.save(copy.deepcopy(order))
    except OutOfStock as exc:
        return _refuse(_sold_out(_catalog(ctx), exc), order)
    except PipeflowError as exc:
        ctx.log_error("storing the order failed: %s", exc)
        return {"ok": False, "message": "The order could not be saved just now. Apologise and"
                " try placing it again."}
    order.placed_id = stored.order_id
    ctx.userdata["placed"] = stored
    ctx.log_info("placed order %s (%s)", stored.order_id, stored.items_text())
    total = order.money(stored.total)
    return {
        "ok": True,
        "message": f"Order {stored.order_id} is placed: {stored.items_text()}, total {total}."
        f" It will be delivered to {stored.address}.",
        "order_id": stored.order_id,
        "lines": order.summary()["lines"],
        "total": str(stored.total),
        "currency": stored.currency,
        "phone": stored.phone,
        "address": stored.address,
    }


def session_order_key(session_id: str) -> str:
    """The idempotency key of a session's order: the session (a job or call id) names it.

    A job reclaimed after its worker died reruns with the same id, so its
    ``place_order`` finds the order the first run stored instead of storing a
    second one. A session places at most one order (a placed order is closed).
    """
    return f"session:{session_id}"


def _sold_out(catalog: Catalog, short: OutOfStock) -> OrderError:
    """The caller's message when another order took the stock first."""
    name = next((p for p in catalog if p.sku == short.sku), None)
    what = name.quantity_text(short.available) if name else f"{short.available} of those"
    left = f"only {what} left" if short.available else "none left"
    return OrderError(
        f"Sorry, other orders came in first and there are {left}; nothing was placed."
        " Ask the caller whether to change the order."
    )


def _catalog(ctx: RunContext) -> Catalog:
    found = ctx.userdata.get("catalog")
    if not isinstance(found, Catalog):
        found = catalog_from_userdata(found)
        ctx.userdata["catalog"] = found
    return found


def _order(ctx: RunContext) -> Order:
    order = ctx.userdata.get("order")
    if not isinstance(order, Order):
        order = Order(currency=_catalog(ctx).currency)
        ctx.userdata["order"] = order
    return order


def _ok(message: str, order: Order) -> dict[str, Any]:
    return {"ok": True, "message": message, "order": order.summary()}


_INSTRUCTION = re.compile(r"\s*\b(?:Ask|Apologise|Tell)\b[^.]*\.")


def _refuse(exc: Exception, order: Order | None = None) -> dict[str, Any]:
    message = str(exc)
    reason = _INSTRUCTION.sub("", message).strip() or message
    result: dict[str, Any] = {"ok": False, "message": message, "reason": reason}
    if order is not None:
        result["order"] = order.summary()
    return result


def _and(items: list[str]) -> str:
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
