"""The order line's catalog: products, prices, stock and loose name lookup."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.errors import ConfigError
from pipelines.orderline.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    Product,
    UnknownProduct,
    catalog_from_userdata,
    format_money,
    normalize_name,
)


def test_default_catalog_has_the_issue_products() -> None:
    prices = {p.name: (p.price, p.stock) for p in DEFAULT_CATALOG}
    assert prices == {
        "pizza": (Decimal("10.00"), 50),
        "salad": (Decimal("5.00"), 100),
        "ice cream": (Decimal("3.00"), 40),
    }
    assert DEFAULT_CATALOG.currency == "USD"


@pytest.mark.parametrize(
    ("said", "sku"),
    [
        ("pizza", "pizza"),
        ("PIZZA", "pizza"),
        ("Pizzas", "pizza"),
        ("pie", "pizza"),
        ("pies", "pizza"),
        ("a pizza pie", "pizza"),
        ("  the Margherita ", "pizza"),
        ("salad", "salad"),
        ("salads", "salad"),
        ("green salad", "salad"),
        ("ice cream", "ice_cream"),
        ("icecream", "ice_cream"),
        ("ice-cream", "ice_cream"),
        ("Ice Creams", "ice_cream"),
        ("gelato", "ice_cream"),
        ("Gelato", "ice_cream"),
        ("some gelato", "ice_cream"),
        ("ice_cream", "ice_cream"),
    ],
)
def test_names_plurals_and_synonyms_find_the_product(said: str, sku: str) -> None:
    found = DEFAULT_CATALOG.find(said)
    assert found is not None and found.sku == sku


@pytest.mark.parametrize("said", ["burger", "", "   ", "the", "pizzeria oven"])
def test_unknown_names_find_nothing(said: str) -> None:
    assert DEFAULT_CATALOG.find(said) is None


def test_unknown_product_message_lists_the_menu_and_the_closest_name() -> None:
    with pytest.raises(UnknownProduct) as caught:
        DEFAULT_CATALOG.get("pizzza")
    message = str(caught.value)
    assert "we don't have 'pizzza'" in message
    assert "pizza, salad and ice cream" in message
    assert message.endswith("Did you mean pizza?")
    with pytest.raises(UnknownProduct, match=r"We have pizza, salad and ice cream\.$"):
        DEFAULT_CATALOG.get("burger")


@given(
    name=st.sampled_from(["pizza", "salad", "ice cream", "gelato", "icecream"]),
    data=st.data(),
)
def test_any_casing_and_spacing_of_a_name_matches(name: str, data: st.DataObject) -> None:
    cased = "".join(
        c.upper() if data.draw(st.booleans()) else c for c in name
    ).replace(" ", data.draw(st.sampled_from([" ", "-", "  ", "", "_"])))
    padded = data.draw(st.sampled_from(["", " ", "\t"])) + cased + data.draw(
        st.sampled_from(["", " ", "!", "?"])
    )
    assert DEFAULT_CATALOG.find(padded) is DEFAULT_CATALOG.find(name)


def test_normalize_name_folds_accents_articles_and_punctuation() -> None:
    assert normalize_name("The Crème-Brûlée!") == "cremebrulee"
    assert normalize_name("a") == "a"  # a lone filler word is kept
    assert normalize_name("   ") == ""


def test_money_is_formatted_exactly() -> None:
    assert format_money(Decimal("20")) == "$20.00"
    assert format_money(Decimal("0.005")) == "$0.01"
    assert format_money(Decimal("3.5"), "eur") == "€3.50"
    assert format_money(Decimal("7"), "CHF") == "7.00 CHF"
    assert DEFAULT_CATALOG.money(Decimal("0.1") + Decimal("0.2")) == "$0.30"


def test_vocabulary_lists_the_words_callers_use() -> None:
    words = DEFAULT_CATALOG.vocabulary()
    assert words == sorted(set(words))
    for word in ("pizza", "pizzas", "pie", "salad", "salads", "ice", "cream", "creams", "gelato"):
        assert word in words
    assert all(w.isalpha() and w == w.lower() for w in words)


def test_describe_gives_exact_price_text() -> None:
    pizza = DEFAULT_CATALOG.get("pizza")
    assert DEFAULT_CATALOG.describe(pizza) == {
        "sku": "pizza",
        "name": "pizza",
        "price": "10.00",
        "currency": "USD",
        "in_stock": 50,
        "description": pizza.description,
    }


def test_plural_and_quantity_text() -> None:
    cream = DEFAULT_CATALOG.get("gelato")
    assert cream.quantity_text(1) == "1 ice cream"
    assert cream.quantity_text(3) == "3 ice creams"
    fish = Product(sku="fish", name="fish", plural="fish", price=Decimal(4), stock=3)
    assert fish.quantity_text(2) == "2 fish"


def test_a_name_shared_by_two_products_is_refused() -> None:
    with pytest.raises(ConfigError, match="'pie' is used by both 'pizza' and 'tart'"):
        Catalog([
            Product(sku="pizza", name="pizza", price=Decimal(10), stock=1, synonyms=("pie",)),
            Product(sku="tart", name="tart", price=Decimal(4), stock=1, synonyms=("pie",)),
        ])
    with pytest.raises(ConfigError, match="two products have the code 'x'"):
        Catalog([
            Product(sku="x", name="one", price=Decimal(1), stock=1),
            Product(sku="x", name="two", price=Decimal(1), stock=1),
        ])


def test_catalog_from_plain_data() -> None:
    catalog = catalog_from_userdata(
        {"currency": "eur", "products": [
            {"sku": "soup", "name": "soup", "price": "4.50", "stock": 7, "synonyms": ["broth"]},
        ]}
    )
    soup = catalog.get("Broth")
    assert soup.price == Decimal("4.50") and soup.stock == 7
    assert catalog.money(soup.price) == "€4.50"
    assert catalog_from_userdata(None) is DEFAULT_CATALOG
    assert catalog_from_userdata(catalog) is catalog


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([{"sku": "soup", "name": "soup", "price": "cheap", "stock": 1}], r"price"),
        ([{"sku": "soup", "name": "soup", "price": "1", "stock": -1}], r"stock"),
        ([{"sku": "soup", "name": "soup", "price": "-1", "stock": 1}], r"price of 'soup'"),
        ([{"sku": "soup", "name": "soup", "price": "NaN", "stock": 1}], r"price of 'soup'"),
        ([{"name": "soup", "price": "1", "stock": 1}], r"sku"),
        ({"currency": "USD"}, r"needs a 'products' list"),
    ],
)
def test_bad_catalog_data_is_a_config_error(data: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        catalog_from_userdata(data)  # type: ignore[arg-type]
