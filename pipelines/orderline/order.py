"""The order being taken: lines, stock checks, totals. Pure logic, no I/O.

One ``Order`` lives in a session's userdata under the key ``"order"``; the
tools change it as the caller speaks. Its ``idempotency_key`` is made when
the order starts and travels to storage, so placing the same order twice
(a retried tool call) stores it once. Every rule breaks with an
``OrderError`` whose message the agent can say as is.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec

from .address import Address
from .catalog import Product, format_money

__all__ = ["Order", "OrderError", "OrderLine", "new_idempotency_key"]


class OrderError(ValueError):
    """An order rule was broken; the message is for the caller."""


def new_idempotency_key() -> str:
    """A fresh random key that names one order for its whole life."""
    return uuid.uuid4().hex


class OrderLine(msgspec.Struct, kw_only=True):
    """Some quantity of one product at the price it had when it was added."""

    sku: str
    """Product code."""
    name: str
    """Product name in the singular."""
    plural: str
    """Product name in the plural."""
    unit_price: Decimal
    """Price of one unit."""
    quantity: int
    """How many units."""

    @property
    def line_total(self) -> Decimal:
        """``unit_price * quantity``."""
        return self.unit_price * self.quantity

    def text(self) -> str:
        """``"2 pizzas"``."""
        return f"{self.quantity} {self.name if self.quantity == 1 else self.plural}"


class Order(msgspec.Struct, kw_only=True):
    """What the caller is ordering, and where it goes."""

    idempotency_key: str = msgspec.field(default_factory=new_idempotency_key)
    """Stable id made when the order starts; storage keys on it."""
    currency: str = "USD"
    """Currency of every price in the order."""
    lines: list[OrderLine] = msgspec.field(default_factory=list)
    """One line per product, in the order they were first added."""
    phone: str = ""
    """Normalised phone number ("" until given)."""
    address: Address | None = None
    """Deliverable address (None until given)."""
    placed_id: str = ""
    """Id of the stored order once placed; a placed order no longer changes."""

    @property
    def total(self) -> Decimal:
        """Sum of the line totals."""
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    @property
    def item_count(self) -> int:
        """Units over all lines."""
        return sum(line.quantity for line in self.lines)

    def line_for(self, sku: str) -> OrderLine | None:
        """The line of product ``sku``, if the order has one."""
        return next((line for line in self.lines if line.sku == sku), None)

    def add(self, product: Product, quantity: int = 1) -> OrderLine:
        """Add units of a product, merging with its line if there is one.

        Returns:
            The product's line after the change.

        Raises:
            OrderError: the order is placed, the quantity is not positive or
                the order would hold more than the stock.
        """
        self._check_open()
        if quantity < 1:
            raise OrderError(
                f"{quantity} is not a quantity that can be ordered. Ask how many"
                f" {product.plural_name()} the caller wants."
            )
        line = self.line_for(product.sku)
        has = line.quantity if line else 0
        if has + quantity > product.stock:
            raise OrderError(_stock_message(product, has))
        if line is None:
            line = OrderLine(sku=product.sku, name=product.name, plural=product.plural_name(),
                             unit_price=product.price, quantity=quantity)
            self.lines.append(line)
        else:
            line.quantity += quantity
        return line

    def remove(self, product: Product, quantity: int | None = None) -> int:
        """Take units of a product out of the order (all of them when ``quantity`` is None).

        Returns:
            How many units are left of that product.

        Raises:
            OrderError: the order is placed, does not have the product, or
                has fewer units than asked to remove.
        """
        self._check_open()
        line = self.line_for(product.sku)
        if line is None:
            raise OrderError(f"The order has no {product.name}, so there is nothing to remove.")
        if quantity is None:
            quantity = line.quantity
        if quantity < 1:
            raise OrderError(
                f"{quantity} is not a quantity that can be removed. Ask how many"
                f" {product.plural_name()} to take off the order."
            )
        if quantity > line.quantity:
            raise OrderError(
                f"The order has only {line.text()}. Ask whether to remove all of them."
            )
        line.quantity -= quantity
        if line.quantity == 0:
            self.lines.remove(line)
        return line.quantity

    def set_phone(self, phone: str) -> None:
        """Record the (already normalised) phone number."""
        self._check_open()
        self.phone = phone

    def set_address(self, address: Address) -> None:
        """Record the (already checked) delivery address."""
        self._check_open()
        self.address = address

    def missing(self) -> list[str]:
        """What placing still needs: "items", "phone number", "delivery address"."""
        needed = []
        if not self.lines:
            needed.append("items")
        if not self.phone:
            needed.append("phone number")
        if self.address is None:
            needed.append("delivery address")
        return needed

    def check_ready(self) -> None:
        """Raise unless the order can be placed.

        Raises:
            OrderError: naming everything still missing.
        """
        needed = self.missing()
        if needed:
            what = needed[0] if len(needed) == 1 else f"{', '.join(needed[:-1])} and {needed[-1]}"
            raise OrderError(
                f"The order cannot be placed yet: it has no {what}. Ask the caller for"
                f" {'it' if len(needed) == 1 else 'them'} first."
            )

    def summary_text(self) -> str:
        """``"2 pizzas at $10.00 each, 1 salad at $5.00. Total $25.00."``."""
        if not self.lines:
            return "The order is empty."
        money = self.money
        parts = [
            f"{line.text()} at {money(line.unit_price)}{' each' if line.quantity > 1 else ''}"
            for line in self.lines
        ]
        listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        return f"{listed[0].upper()}{listed[1:]}. Total {money(self.total)}."

    def summary(self) -> dict[str, Any]:
        """The order as plain data for the model: lines, total, phone, address, text."""
        return {
            "lines": [
                {"product": line.name, "quantity": line.quantity,
                 "unit_price": str(line.unit_price), "line_total": str(line.line_total)}
                for line in self.lines
            ],
            "item_count": self.item_count,
            "total": str(self.total),
            "currency": self.currency,
            "phone": self.phone,
            "address": self.address.one_line() if self.address else "",
            "missing": self.missing(),
            "text": self.summary_text(),
        }

    def money(self, amount: Decimal) -> str:
        """Format an amount in the order's currency."""
        return format_money(amount, self.currency)

    def _check_open(self) -> None:
        if self.placed_id:
            raise OrderError(
                f"Order {self.placed_id} has already been placed and can no longer be changed."
            )


def _stock_message(product: Product, has: int) -> str:
    left = product.stock - has
    if has:
        return (
            f"Sorry, we only have {product.quantity_text(product.stock)} and the order already"
            f" has {has}; at most {left} more can be added."
        )
    if product.stock == 0:
        return f"Sorry, {product.plural_name()} are sold out right now."
    return f"Sorry, we only have {product.quantity_text(product.stock)} in stock."
