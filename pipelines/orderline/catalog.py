"""The shop's catalog: products, prices and stock, looked up the way callers say them.

Callers and models name products loosely ("two pizzas", "a pie", "ice-cream",
"gelato"), so a lookup normalises the name (case, accents, spaces, hyphens,
leading articles, plurals) and checks names, plurals and synonyms. Money is
``Decimal`` throughout: a total is never off by a float rounding.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import msgspec

from pipeflow.errors import ConfigError

__all__ = [
    "DEFAULT_CATALOG",
    "Catalog",
    "Product",
    "UnknownProduct",
    "catalog_from_userdata",
    "format_money",
    "normalize_name",
    "spoken_names",
]

_CENT = Decimal("0.01")
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_FILLERS = frozenset({"a", "an", "the", "some", "one", "of", "please", "portion", "portions"})


class Product(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One thing the shop sells."""

    sku: str
    """Stable product code (stored with orders)."""
    name: str
    """Name in the singular, as the agent says it ("ice cream")."""
    price: Decimal
    """Unit price in the catalog's currency (not negative)."""
    stock: Annotated[int, msgspec.Meta(ge=0)]
    """Units available; an order may not ask for more."""
    description: str = ""
    """One sentence the agent can read out."""
    plural: str = ""
    """Plural name (default: the name plus "s")."""
    synonyms: tuple[str, ...] = ()
    """Other names callers use for it ("pie", "gelato")."""

    def __post_init__(self) -> None:
        if not self.price.is_finite() or self.price < 0:
            raise ValueError(f"the price of {self.name!r} must be a finite amount of 0 or more")

    def plural_name(self) -> str:
        """The plural name: ``plural`` or the name plus "s"."""
        return self.plural or f"{self.name}s"

    def quantity_text(self, quantity: int) -> str:
        """``"1 pizza"``, ``"2 pizzas"``."""
        return f"{quantity} {self.name if quantity == 1 else self.plural_name()}"


class UnknownProduct(LookupError):
    """No product has the name asked for; the message can be said to the caller."""


def normalize_name(text: str) -> str:
    """The key a product name is matched by.

    Lower case, accents removed, leading articles and fillers dropped
    ("a", "the", "some"), and every non-alphanumeric character removed, so
    "Ice-Cream", "ice cream" and "icecream" are one key.
    """
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    words = re.findall(r"[a-z0-9]+", folded)
    while len(words) > 1 and words[0] in _FILLERS:
        words.pop(0)
    return "".join(words)


def format_money(amount: Decimal, currency: str = "USD") -> str:
    """``Decimal("20")`` -> ``"$20.00"`` (or ``"20.00 CHF"`` without a known symbol)."""
    value = amount.quantize(_CENT, rounding=ROUND_HALF_UP)
    symbol = _SYMBOLS.get(currency.upper())
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


class Catalog:
    """Products by name, plural, synonym or code, matched case-insensitively.

    Args:
        products: the products; names, plurals, synonyms and codes must not
            collide between two products.
        currency: ISO code of the prices (used when formatting money).

    Raises:
        ConfigError: two products share a name, synonym or code.
    """

    def __init__(self, products: Iterable[Product], currency: str = "USD") -> None:
        self.currency = currency.upper()
        self._products: dict[str, Product] = {}
        self._index: dict[str, Product] = {}
        for product in products:
            if product.sku in self._products:
                raise ConfigError(f"catalog: two products have the code {product.sku!r}")
            self._products[product.sku] = product
            names = (product.sku, product.name, product.plural_name(), *product.synonyms)
            for name in names:
                key = normalize_name(name)
                other = self._index.get(key)
                if other is not None and other is not product:
                    raise ConfigError(
                        f"catalog: the name {name!r} is used by both {other.name!r} and"
                        f" {product.name!r}; each name or synonym must name one product"
                    )
                if key:
                    self._index[key] = product

    @classmethod
    def from_data(cls, items: Any, currency: str = "USD") -> Catalog:
        """Build a catalog from plain data (a list of product mappings from YAML).

        Raises:
            ConfigError: the data does not describe products; the message
                names the product and the field.
        """
        try:
            products = msgspec.convert(items, list[Product], strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"catalog: {exc}; each product needs sku, name, price and stock"
            ) from None
        return cls(products, currency)

    def __iter__(self) -> Iterator[Product]:
        return iter(self._products.values())

    def __len__(self) -> int:
        return len(self._products)

    def find(self, name: str) -> Product | None:
        """The product ``name`` refers to, or None.

        Tries the normalised name, then the name without a plural ending
        ("pizzas", "salades").
        """
        key = normalize_name(name)
        if not key:
            return None
        found = self._index.get(key)
        if found is None:
            for ending in ("es", "s"):
                if key.endswith(ending) and len(key) > len(ending) + 1:
                    found = self._index.get(key[: -len(ending)])
                    if found is not None:
                        break
        return found

    def get(self, name: str) -> Product:
        """Like ``find`` but raises when nothing matches.

        Raises:
            UnknownProduct: with a message that lists the menu and the
                closest name, ready to be said to the caller.
        """
        found = self.find(name)
        if found is not None:
            return found
        shown = name.strip() or "that"
        message = f"Sorry, we don't have {shown!r}. We have {self.menu_text()}."
        close = difflib.get_close_matches(normalize_name(name), list(self._index), n=1,
                                          cutoff=0.75)
        if close:
            message += f" Did you mean {self._index[close[0]].name}?"
        raise UnknownProduct(message)

    def menu_text(self) -> str:
        """``"pizza, salad and ice cream"``."""
        names = [p.name for p in self]
        if len(names) <= 1:
            return "".join(names) or "nothing on the menu right now"
        return f"{', '.join(names[:-1])} and {names[-1]}"

    def vocabulary(self) -> list[str]:
        """Every word of every product name, plural and synonym, lower case and sorted.

        For a speech recogniser's keyword list or grammar: the words a
        caller uses to name what they want.
        """
        words: set[str] = set()
        for product in self:
            for name in (product.name, product.plural_name(), *product.synonyms):
                words.update(re.findall(r"[^\W\d_]+", name.casefold()))
        return sorted(words)

    def spoken_names(self) -> dict[str, str]:
        """Every way a caller names a product -> the product's name.

        Names, plurals and synonyms, with a plural for each synonym ("pies"):
        the vocabulary of the offline script's ``product`` captures.
        """
        names: dict[str, str] = {}
        for product in self:
            for name in (product.name, product.plural_name(), *product.synonyms,
                         *(_plural(s) for s in product.synonyms)):
                names.setdefault(" ".join(name.casefold().split()), product.name)
        return names

    def money(self, amount: Decimal) -> str:
        """Format an amount in this catalog's currency."""
        return format_money(amount, self.currency)

    def describe(self, product: Product) -> dict[str, Any]:
        """A product as plain data for the model (price as a string, exact)."""
        return {
            "sku": product.sku,
            "name": product.name,
            "price": str(product.price.quantize(_CENT)),
            "currency": self.currency,
            "in_stock": product.stock,
            "description": product.description,
        }


def _default_products() -> list[Product]:
    return [
        Product(
            sku="pizza",
            name="pizza",
            price=Decimal("10.00"),
            stock=50,
            description="A 12-inch margherita pizza, baked to order.",
            synonyms=("pie", "pizza pie", "margherita"),
        ),
        Product(
            sku="salad",
            name="salad",
            price=Decimal("5.00"),
            stock=100,
            description="A green salad with the house dressing.",
            synonyms=("green salad", "side salad", "garden salad"),
        ),
        Product(
            sku="ice_cream",
            name="ice cream",
            price=Decimal("3.00"),
            stock=40,
            description="A cup of vanilla ice cream.",
            synonyms=("icecream", "gelato", "ice cream cup", "scoop of ice cream"),
        ),
    ]


DEFAULT_CATALOG = Catalog(_default_products())
"""Pizza 10.00 (50 in stock), salad 5.00 (100), ice cream 3.00 (40), in USD."""


def spoken_names() -> dict[str, str]:
    """The default catalog's ``Catalog.spoken_names`` (a script's ``vocabularies`` entry)."""
    return DEFAULT_CATALOG.spoken_names()


def _plural(name: str) -> str:
    """"pie" -> "pies", "scoop of ice cream" -> "scoops of ice cream"."""
    first, _, rest = name.partition(" of ")
    return f"{first}s of {rest}" if rest else f"{name}s"


def catalog_from_userdata(value: Catalog | Mapping[str, Any] | list[Any] | None) -> Catalog:
    """The catalog a session uses: given, built from YAML data, or the default.

    Args:
        value: a ``Catalog``; a list of product mappings; a mapping with
            ``products`` and optionally ``currency``; or None for the default.

    Raises:
        ConfigError: the data does not describe a catalog.
    """
    if value is None:
        return DEFAULT_CATALOG
    if isinstance(value, Catalog):
        return value
    if isinstance(value, Mapping):
        if "products" not in value:
            raise ConfigError("catalog: a catalog mapping needs a 'products' list")
        return Catalog.from_data(value["products"], str(value.get("currency", "USD")))
    return Catalog.from_data(value)
