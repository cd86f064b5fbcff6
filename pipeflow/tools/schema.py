"""Python types and docstrings -> the JSON schema a model sees.

``type_schema`` maps one annotation to a JSON schema object; it inlines nested
structures (msgspec Structs, dataclasses, TypedDicts) because models follow
a self-contained schema more reliably than ``$ref`` chains. An annotation it
cannot express raises ``UnsupportedType`` naming the offending part, so the
decorator can report the function and the parameter.

``parse_docstring`` splits a docstring into the description and the
per-parameter descriptions of a Google (``Args:``), NumPy (``Parameters``
underlined) or reST (``:param name:``) style docstring.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

__all__ = ["UnsupportedType", "parse_docstring", "split_annotated", "type_schema"]


class UnsupportedType(TypeError):
    """An annotation has no JSON schema; the message names the offending type."""


# --- types -------------------------------------------------------------------

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    None: {"type": "null"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    datetime.timedelta: {"type": "string", "format": "duration"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    decimal.Decimal: {"type": "string", "format": "decimal"},
    bytes: {"type": "string", "contentEncoding": "base64"},
}

_ARRAYS = (list, set, frozenset, Sequence, typing.List, typing.Set, typing.FrozenSet)  # noqa: UP006
_MAPPINGS = (dict, Mapping, typing.Dict)  # noqa: UP006

# msgspec.Meta attribute -> JSON schema keyword, by the kind of value constrained.
_NUMBER_META = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum",
                "lt": "exclusiveMaximum", "multiple_of": "multipleOf"}
_LENGTH_META = {
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}


def split_annotated(annotation: Any) -> tuple[Any, list[str], list[msgspec.Meta]]:
    """Peel ``Annotated[T, ...]`` into T, its string notes and its ``msgspec.Meta``s."""
    notes: list[str] = []
    metas: list[msgspec.Meta] = []
    while get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, str):
                notes.append(extra)
            elif isinstance(extra, msgspec.Meta):
                metas.append(extra)
        annotation = base
    return annotation, notes, metas


def type_schema(annotation: Any, _seen: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The JSON schema of one annotation.

    Args:
        annotation: a type hint (``int``, ``list[Item]``, ``Annotated[...]``...).

    Returns:
        A new JSON schema dict.

    Raises:
        UnsupportedType: the annotation (or a part of it) has no JSON form,
            or a structure refers to itself.
    """
    base, notes, metas = split_annotated(annotation)
    schema = _base_schema(base, _seen)
    for meta in metas:
        _apply_meta(schema, meta)
    if notes and "description" not in schema:
        schema["description"] = " ".join(notes)
    return schema


def _base_schema(tp: Any, seen: tuple[Any, ...]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if isinstance(tp, typing.TypeVar | typing.ForwardRef | str):
        raise UnsupportedType(f"unresolved type {tp!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp])
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    origin = get_origin(tp)
    if origin is Literal:
        return _enum_schema(list(get_args(tp)))
    if origin in (Union, types.UnionType):
        return _union_schema(get_args(tp), seen)
    if tp in _ARRAYS or origin in _ARRAYS:
        args = get_args(tp)
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Any:
            schema["items"] = type_schema(args[0], seen)
        if tp in (set, frozenset) or origin in (set, frozenset, typing.Set, typing.FrozenSet):  # noqa: UP006
            schema["uniqueItems"] = True
        return schema
    if tp is tuple or origin is tuple:
        return _tuple_schema(get_args(tp), seen)
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return _mapping_schema(tp, get_args(tp), seen)
    if isinstance(tp, type):
        if tp in seen:
            raise UnsupportedType(f"{tp.__qualname__} refers to itself; tools need finite schemas")
        if issubclass(tp, msgspec.Struct):
            return _struct_schema(tp, (*seen, tp))
        if dataclasses.is_dataclass(tp):
            return _dataclass_schema(tp, (*seen, tp))
        if typing.is_typeddict(tp):
            return _typeddict_schema(tp, (*seen, tp))
    name = getattr(tp, "__qualname__", None) or repr(tp)
    raise UnsupportedType(f"type {name} has no JSON schema")


def _json_type(value: Any) -> str | None:
    for cls, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, cls):
            return name
    return "null" if value is None else None


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {_json_type(v) for v in values}
    if None in kinds:
        raise UnsupportedType(f"enum values {values!r} must be str, int, float, bool or None")
    schema: dict[str, Any] = {}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    elif kinds <= {"integer", "number"}:
        schema["type"] = "number"
    schema["enum"] = values
    return schema


def _union_schema(members: tuple[Any, ...], seen: tuple[Any, ...]) -> dict[str, Any]:
    schemas = [type_schema(m, seen) for m in members]
    if any(not s for s in schemas):
        return {}  # Any absorbs the rest
    # Simple members collapse into one "type" list: {"type": ["string", "null"]}.
    if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
        names = list(dict.fromkeys(s["type"] for s in schemas))
        return {"type": names[0] if len(names) == 1 else names}
    return {"anyOf": schemas}


def _tuple_schema(args: tuple[Any, ...], seen: tuple[Any, ...]) -> dict[str, Any]:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Any:
            schema["items"] = type_schema(args[0], seen)
        return schema
    if args == ((),):
        return {"type": "array", "maxItems": 0}
    return {
        "type": "array",
        "prefixItems": [type_schema(a, seen) for a in args],
        "minItems": len(args),
        "maxItems": len(args),
    }


def _mapping_schema(tp: Any, args: tuple[Any, ...], seen: tuple[Any, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if not args:
        return schema
    key, value = args
    key_base = split_annotated(key)[0]
    if key_base is not str and not (
        isinstance(key_base, type) and issubclass(key_base, str)
    ):
        raise UnsupportedType(f"{tp!r} has non-string keys; JSON object keys are strings")
    if value is not Any:
        schema["additionalProperties"] = type_schema(value, seen)
    return schema


def _object(
    cls: type, props: dict[str, dict[str, Any]], required: list[str], closed: bool
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    doc = _class_doc(cls)
    if doc:
        schema["description"] = doc
    schema["properties"] = props
    schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _class_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    if not doc or (dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}(")):
        return ""  # dataclasses make up a signature docstring; it says nothing
    return parse_docstring(doc)[0]


def _property(annotation: Any, default: Any, seen: tuple[Any, ...]) -> dict[str, Any]:
    schema = type_schema(annotation, seen)
    if default is not _MISSING:
        with_default = _json_default(default)
        if with_default is not _MISSING:
            schema["default"] = with_default
    return schema


_MISSING: Any = object()


def _json_default(value: Any) -> Any:
    """The JSON form of a default value, or _MISSING when it has none."""
    if value is msgspec.NODEFAULT or value is dataclasses.MISSING or value is _MISSING:
        return _MISSING
    try:
        return msgspec.to_builtins(value)
    except (TypeError, ValueError):
        return _MISSING


def _struct_schema(cls: type[msgspec.Struct], seen: tuple[Any, ...]) -> dict[str, Any]:
    props: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    config = cls.__struct_config__
    if config.tag is not None and config.tag_field is not None:
        props[config.tag_field] = {"enum": [config.tag]}
        required.append(config.tag_field)
    for field in msgspec.structs.fields(cls):
        has_default = (
            field.default is not msgspec.NODEFAULT or field.default_factory is not msgspec.NODEFAULT
        )
        default = field.default if field.default is not msgspec.NODEFAULT else _MISSING
        props[field.encode_name] = _property(field.type, default, seen)
        if not has_default:
            required.append(field.encode_name)
    return _object(cls, props, required, closed=bool(config.forbid_unknown_fields))


def _dataclass_schema(cls: type, seen: tuple[Any, ...]) -> dict[str, Any]:
    hints = _hints(cls)
    props: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        props[field.name] = _property(hints[field.name], field.default, seen)
        if not has_default:
            required.append(field.name)
    return _object(cls, props, required, closed=False)


def _typeddict_schema(cls: type, seen: tuple[Any, ...]) -> dict[str, Any]:
    hints = _hints(cls)
    required_keys = getattr(cls, "__required_keys__", frozenset(hints))
    props = {name: type_schema(tp, seen) for name, tp in hints.items()}
    required = [name for name in hints if name in required_keys]
    return _object(cls, props, required, closed=False)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:
        raise UnsupportedType(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}"
        ) from exc


def _apply_meta(schema: dict[str, Any], meta: msgspec.Meta) -> None:
    for attr, keyword in _NUMBER_META.items():
        value = getattr(meta, attr)
        if value is not None:
            schema[keyword] = value
    kind = schema.get("type")
    lengths = _LENGTH_META.get(kind) if isinstance(kind, str) else None
    for attr, keyword in zip(("min_length", "max_length"), lengths or ("minLength", "maxLength"),
                             strict=True):
        value = getattr(meta, attr)
        if value is not None:
            schema[keyword] = value
    for attr in ("pattern", "title", "description", "examples"):
        value = getattr(meta, attr)
        if value is not None:
            schema[attr] = value
    if meta.extra_json_schema:
        schema.update(meta.extra_json_schema)


# --- docstrings --------------------------------------------------------------

_SECTIONS = (
    "args", "arguments", "parameters", "params", "keyword args", "keyword arguments",
    "other parameters", "returns", "return", "yields", "yield", "raises", "except",
    "exceptions", "example", "examples", "note", "notes", "attributes", "see also",
    "warning", "warnings", "warns", "references", "todo",
)
_PARAM_SECTIONS = frozenset(_SECTIONS[:7])
_GOOGLE_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_REST_FIELD = re.compile(r"^:(\w+)(?:\s+([^:]+?))?:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into its description and parameter descriptions.

    Args:
        doc: a docstring in Google, NumPy or reST style (or plain text).

    Returns:
        ``(description, {parameter: description})``; the description is the
        text before the first section, paragraphs kept, lines unwrapped.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    body_end = len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _section_header(lines, i)
        if header is not None:
            name, width = header
            body_end = min(body_end, i)
            i += width
            start = i
            while i < len(lines) and _section_header(lines, i) is None and not (
                lines[i] and not lines[i][0].isspace() and _REST_FIELD.match(lines[i])
            ):
                i += 1
            if name in _PARAM_SECTIONS:
                params.update(_section_items(lines[start:i], numpy=width == 2))
            continue
        field = _REST_FIELD.match(line)
        if field:
            body_end = min(body_end, i)
            i += 1
            text = [field.group(3)]
            while i < len(lines) and lines[i][:1].isspace():
                text.append(lines[i])
                i += 1
            kind, arg = field.group(1), field.group(2)
            if kind in ("param", "parameter", "arg", "argument", "key", "keyword") and arg:
                params[arg.split()[-1]] = _unwrap(text)
            continue
        i += 1
    return _unwrap(lines[:body_end]), params


def _section_header(lines: list[str], i: int) -> tuple[str, int] | None:
    """(section name, header line count) when a section starts at line i."""
    line = lines[i]
    if i + 1 < len(lines) and _NUMPY_RULE.match(lines[i + 1]):
        name = line.strip().lower()
        if name in _SECTIONS:
            return name, 2
    match = _GOOGLE_HEADER.match(line)
    if match and match.group(1).lower() in _SECTIONS:
        return match.group(1).lower(), 1
    return None


def _section_items(lines: list[str], numpy: bool) -> dict[str, str]:
    """Parameter entries of one section: an item line, then deeper continuation lines."""
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    if not indents:
        return {}
    base = min(indents)
    items: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == base:
            current = None
            match = (_NUMPY_ITEM if numpy else _GOOGLE_ITEM).match(line.strip())
            if match:
                current = items.setdefault(match.group(1), [])
                if not numpy and match.group(2):
                    current.append(match.group(2))
        elif current is not None:
            current.append(line.strip())
    return {name: _unwrap(text) for name, text in items.items() if text}


def _unwrap(lines: list[str]) -> str:
    """Join wrapped lines with spaces and keep blank-line paragraph breaks."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)
