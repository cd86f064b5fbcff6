"""The phone order line's domain: catalog, order rules, phone and address checks, storage.

The modules are plain Python with no pipeline in sight, so they are easy to
test and reuse; ``tools`` wraps them as ``@tool`` functions and provides the
``setup`` and ``summary`` hooks a pipeline file names::

    agent:
      tools: [pipelines.orderline.tools]
      setup: pipelines.orderline.tools:setup
      summary: pipelines.orderline.tools:summary
      userdata:
        db: ${ORDERLINE_DB:-}        # empty: SQLite in the output folder

Importing this package does not register the tools; import ``tools`` for that.
"""

from .address import Address, AddressError, parse_address, require_deliverable
from .catalog import DEFAULT_CATALOG, Catalog, Product, UnknownProduct
from .order import Order, OrderError, OrderLine
from .phone import PhoneError, normalize_phone, speak_phone
from .storage import (
    OrderRepository,
    PostgresOrderRepository,
    SqliteOrderRepository,
    StoredOrder,
    open_repository,
)

__all__ = [
    "DEFAULT_CATALOG",
    "Address",
    "AddressError",
    "Catalog",
    "Order",
    "OrderError",
    "OrderLine",
    "OrderRepository",
    "PhoneError",
    "PostgresOrderRepository",
    "Product",
    "SqliteOrderRepository",
    "StoredOrder",
    "UnknownProduct",
    "normalize_phone",
    "open_repository",
    "parse_address",
    "require_deliverable",
    "speak_phone",
]
