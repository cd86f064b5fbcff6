"""Types and docstrings -> JSON schema, and the OpenAI shapes tools are sent in."""

import dataclasses
import datetime
import enum
import typing
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.tools import ToolSet, build_tool, decode_arguments
from pipeflow.tools.schema import UnsupportedType, parse_docstring, type_schema
from pipelines.example_tools import add_numbers, get_weather, search_web

# --- documented OpenAI shapes ------------------------------------------------

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country, e.g. 'Paris, France'"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
    },
    "required": ["location"],
    "additionalProperties": False,
}


def test_realtime_shape_snapshot() -> None:
    # Realtime session.update: tools[] = {"type": "function", "name", "description", "parameters"}
    assert get_weather.to_openai_format("realtime") == {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a location.",
        "parameters": WEATHER_PARAMETERS,
    }


def test_chat_shape_snapshot() -> None:
    # Chat Completions: tools[] = {"type": "function", "function": {"name", "description", ...}}
    assert add_numbers.to_openai_format("chat") == {
        "type": "function",
        "function": {
            "name": "add_numbers",
            "description": "Calculate the sum of two numbers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "number", "description": "the first number."},
                    "b": {"type": "number", "description": "the second number."},
                },
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }


def test_shapes_match_the_openai_sdk_types() -> None:
    """Keys and value types agree with the official SDK's definitions of both shapes."""
    pytest.importorskip("openai")
    from openai.types.chat import ChatCompletionFunctionTool, ChatCompletionFunctionToolParam
    from openai.types.realtime import RealtimeFunctionTool, RealtimeFunctionToolParam
    from openai.types.shared_params import FunctionDefinition

    tools = ToolSet([get_weather, add_numbers, search_web])
    for schema in tools.to_openai_format("realtime"):
        assert set(schema) <= set(RealtimeFunctionToolParam.__annotations__)
        RealtimeFunctionTool.model_validate(schema)
    for schema in tools.to_openai_format("chat"):
        assert set(schema) <= set(ChatCompletionFunctionToolParam.__annotations__)
        assert set(schema["function"]) <= set(FunctionDefinition.__annotations__)
        ChatCompletionFunctionTool.model_validate(schema)


def test_run_context_never_in_schema() -> None:
    props = search_web.parameters["properties"]
    assert set(props) == {"query", "max_results"}
    assert search_web.context_param == "context"
    assert props["max_results"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "description": "how many results to return.",
        "default": 3,
    }


def test_schema_copies_are_independent() -> None:
    first = get_weather.to_openai_format()
    first["parameters"]["properties"].clear()
    assert get_weather.to_openai_format()["parameters"] == WEATHER_PARAMETERS


# --- type mapping --------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A line of an order."""

    sku: Annotated[str, msgspec.Meta(min_length=3, description="Product code")]
    qty: int = 1
    notes: list[str] = msgspec.field(default_factory=list)


class Renamed(msgspec.Struct, rename="camel"):
    first_name: str


class Tagged(msgspec.Struct, tag="pickup"):
    store: str


@dataclasses.dataclass
class Address:
    """Where to deliver."""

    street: str
    zip_code: str | None = None


class Options(typing.TypedDict, total=False):
    gift: bool


class Node(msgspec.Struct):
    children: list["Node"]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (str | None, {"type": ["string", "null"]}),
        (typing.Optional[int], {"type": ["integer", "null"]}),  # noqa: UP045
        (int | str, {"type": ["integer", "string"]}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2.5], {"type": "number", "enum": [1, 2.5]}),
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list, {"type": "array"}),
        (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict[str, Any], {"type": "object"}),
        (datetime.datetime, {"type": "string", "format": "date-time"}),
        (datetime.date, {"type": "string", "format": "date"}),
        (Annotated[str, "The city"], {"type": "string", "description": "The city"}),
        (
            Annotated[int, msgspec.Meta(ge=0, lt=10, description="Digit")],
            {"type": "integer", "minimum": 0, "exclusiveMaximum": 10, "description": "Digit"},
        ),
        (
            Annotated[list[int], msgspec.Meta(min_length=1)],
            {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        ),
    ],
)
def test_type_schema(annotation: Any, expected: dict[str, Any]) -> None:
    assert type_schema(annotation) == expected


def test_struct_is_a_nested_object() -> None:
    assert type_schema(list[Item]) == {
        "type": "array",
        "items": {
            "type": "object",
            "description": "A line of an order.",
            "properties": {
                "sku": {"type": "string", "minLength": 3, "description": "Product code"},
                "qty": {"type": "integer", "default": 1},
                "notes": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["sku"],
            "additionalProperties": False,
        },
    }


def test_struct_rename_and_tag() -> None:
    assert type_schema(Renamed)["properties"] == {"firstName": {"type": "string"}}
    tagged = type_schema(Tagged)
    assert tagged["properties"]["type"] == {"enum": ["pickup"]}
    assert tagged["required"] == ["type", "store"]


def test_dataclass_and_typeddict() -> None:
    assert type_schema(Address) == {
        "type": "object",
        "description": "Where to deliver.",
        "properties": {
            "street": {"type": "string"},
            "zip_code": {"type": ["string", "null"], "default": None},
        },
        "required": ["street"],
    }
    assert type_schema(Options) == {
        "type": "object",
        "properties": {"gift": {"type": "boolean"}},
        "required": [],
    }


def test_optional_struct_uses_any_of() -> None:
    schema = type_schema(Address | None)
    assert schema["anyOf"][1] == {"type": "null"}
    assert schema["anyOf"][0]["properties"]["street"] == {"type": "string"}


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (object, "type object has no JSON schema"),
        (dict[int, str], "non-string keys"),
        (Node, "refers to itself"),
        (list[complex], "type complex has no JSON schema"),
        (Literal[b"x"], "enum values"),
    ],
)
def test_unsupported_types(annotation: Any, message: str) -> None:
    with pytest.raises(UnsupportedType, match=message):
        type_schema(annotation)


# --- a schema accepts exactly what validation accepts ----------------------------


def _types() -> st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]]:
    """(annotation, strategy of JSON-ready values of it), nested."""
    text = st.text(max_size=8)
    base = st.sampled_from(
        [
            (str, text),
            (int, st.integers(-(2**53), 2**53)),
            (float, st.floats(allow_nan=False, allow_infinity=False)),
            (bool, st.booleans()),
            (Literal["x", "y"], st.sampled_from(["x", "y"])),
            (Color, st.sampled_from(["red", "green"])),
        ]
    )

    def extend(
        inner: st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]],
    ) -> st.SearchStrategy[tuple[Any, st.SearchStrategy[Any]]]:
        return st.one_of(
            inner.map(lambda p: (list[p[0]], st.lists(p[1], max_size=3))),
            inner.map(lambda p: (dict[str, p[0]], st.dictionaries(text, p[1], max_size=3))),
            inner.map(lambda p: (p[0] | None, st.one_of(st.none(), p[1]))),
        )

    return st.recursive(base, extend, max_leaves=4)


@settings(max_examples=60, deadline=None)
@given(pair=_types(), data=st.data())
def test_generated_schemas_accept_valid_arguments(
    pair: tuple[Any, st.SearchStrategy[Any]], data: st.DataObject
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    annotation, values = pair

    def probe(value: Any) -> Any:
        return value

    probe.__annotations__ = {"value": annotation}
    made = build_tool(probe)
    value = data.draw(values)
    raw = msgspec.json.encode({"value": value}).decode()
    assert jsonschema_rs.validator_for(dict(made.parameters)).is_valid({"value": value})
    _, kwargs = decode_arguments(made, raw)  # msgspec accepts what the schema accepts
    encoded = msgspec.to_builtins(kwargs["value"])
    assert encoded == value


# --- docstrings ------------------------------------------------------------------


def test_google_docstring() -> None:
    doc = """Book a table.

    Finds a free table and
    holds it for ten minutes.

    Args:
        party (int): how many people,
            children included.
        time: when, as HH:MM.

    Returns:
        str: a confirmation.
    """
    description, params = parse_docstring(doc)
    assert description == "Book a table.\n\nFinds a free table and holds it for ten minutes."
    assert params == {"party": "how many people, children included.", "time": "when, as HH:MM."}


def test_numpy_docstring() -> None:
    doc = """Book a table.

    Parameters
    ----------
    party : int
        How many people.
    time
        When.

    Returns
    -------
    str
    """
    assert parse_docstring(doc) == ("Book a table.", {"party": "How many people.", "time": "When."})


def test_rest_docstring() -> None:
    doc = """Book a table.

    :param int party: how many
        people.
    :param time: when.
    :returns: a confirmation.
    """
    assert parse_docstring(doc) == ("Book a table.", {"party": "how many people.", "time": "when."})


def test_plain_and_empty_docstrings() -> None:
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("Just text.\nOn two lines.") == ("Just text. On two lines.", {})
