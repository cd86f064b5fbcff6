"""YAML loading that remembers where every value came from.

``yaml.safe_load`` forgets line numbers, so we compose the node tree with the
safe loader and build plain Python values ourselves, keeping a map from each
value's path (``("stages", 2, "rate")``) to its ``file:line:column``. Strings
get ``${VAR}`` / ``${VAR:-default}`` interpolation from the environment on the
way; a plain (unquoted) scalar that is one whole ``${...}`` is re-read as YAML,
so ``rate: ${RATE:-24000}`` is an int.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from pipeflow.errors import ConfigError

__all__ = ["Located", "Path", "interpolate", "load_yaml"]

Path = tuple[str | int, ...]

MAX_VALUES = 100_000
"""The most values a pipeline file may expand to (call.yaml has a few hundred)."""

MAX_BYTES = 1 << 20
"""The largest YAML text read (call.yaml is 3 KB; 1 MiB takes PyYAML seconds to parse)."""

MAX_DEPTH = 64
"""The deepest nesting of mappings and lists a file may have (call.yaml has 5 levels)."""

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML has it: ten times faster, same nodes and marks."""

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}", re.S)
_WHOLE_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-.*?)?\}$", re.S)


class Located:
    """A YAML document as Python values plus the location of each value."""

    def __init__(self, filename: str, data: Any, marks: dict[Path, tuple[int, int]]) -> None:
        self.filename = filename
        self.data = data
        self.marks = marks
        self.overrides: dict[Path, str] = {}
        """Paths set from the command line, with the ``--set`` text that set them."""

    def override(self, path: Path, origin: str) -> None:
        """Record that the value at ``path`` came from ``origin`` (e.g. ``--set 'a.b=1'``)."""
        self.overrides[tuple(path)] = origin

    def where(self, path: Path) -> str:
        """``file:line:col`` of the value at ``path`` (or of its nearest parent).

        A value set with ``--set`` is located at that ``--set``, not in the file.
        """
        probe = tuple(path)
        while probe:
            if probe in self.overrides:
                return self.overrides[probe]
            if probe in self.marks:
                break
            probe = probe[:-1]
        line, col = self.marks.get(probe, (0, 0))
        return f"{self.filename}:{line}:{col}" if line else self.filename


def interpolate(
    text: str, env: Mapping[str, str] | None = None, where: str = ""
) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with values from ``env``.

    Raises:
        ConfigError: a variable without default is not set.
    """
    env = os.environ if env is None else env

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)",
                    where,
                )
            return default
        return value

    return _VAR.sub(replace, text)


def load_yaml(text: str, filename: str, env: Mapping[str, str] | None = None) -> Located:
    """Parse YAML text into values with locations.

    Raises:
        ConfigError: the text is not valid YAML (with line and column), is
            larger than ``MAX_BYTES``, nests deeper than ``MAX_DEPTH`` or holds a
            string that is not valid Unicode.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ConfigError(
            f"the file is {size:,} bytes; a pipeline or script file is at most "
            f"{MAX_BYTES:,} bytes",
            filename,
        )
    try:
        # Depth first, from the event stream (iterative): composing nodes recurses.
        too_deep = _too_deep(text, filename)
        if too_deep:
            raise ConfigError(
                f"mappings and lists nest more than {MAX_DEPTH} levels deep", too_deep
            )
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = exc.problem or exc.context or "invalid YAML"
        if "maximum nesting depth" in problem:  # libyaml's own limit, met while scanning ahead
            raise ConfigError(
                f"mappings and lists nest more than {MAX_DEPTH} levels deep", where
            ) from None
        raise ConfigError(f"invalid YAML: {problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", filename) from None
    marks: dict[Path, tuple[int, int]] = {}
    if node is None:
        return Located(filename, None, marks)
    if _expanded_size(node, {}) > MAX_VALUES:
        aliased = " once YAML aliases are expanded" if _has_alias(text) else ""
        raise ConfigError(
            f"the file holds more than {MAX_VALUES:,} values{aliased}; "
            "a pipeline file is never that large",
            filename,
        )
    constructor = yaml.SafeLoader("")
    try:
        data = _build(node, (), marks, constructor, filename, env)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", filename) from None
    return Located(filename, data, marks)


def _build(
    node: yaml.Node,
    path: Path,
    marks: dict[Path, tuple[int, int]],
    constructor: yaml.SafeLoader,
    filename: str,
    env: Mapping[str, str] | None,
) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    where = f"{filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            try:
                key = constructor.construct_object(key_node, deep=True)
            except yaml.YAMLError as exc:
                raise ConfigError(f"invalid YAML key: {exc}".split("\n")[0], where) from None
            if not isinstance(key, str | int | float | bool):
                raise ConfigError("mapping keys must be plain scalars", where)
            if isinstance(key, str):
                _check_unicode(key, _mark(filename, key_node))
            if key in result:
                raise ConfigError(f"duplicate key {key!r}", _mark(filename, key_node))
            key_path = (*path, key)  # type: ignore[misc]
            marks[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _build(value_node, key_path, marks, constructor, filename, env)
            marks[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), marks, constructor, filename, env)
            for i, item in enumerate(node.value)
        ]
    try:
        value = constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML value: {exc}".split("\n")[0], where) from None
    if isinstance(value, str):
        _check_unicode(value, where)
    if isinstance(value, str) and "${" in value:
        whole = not node.style and _WHOLE_VAR.match(value) is not None  # plain: None or ""
        value = interpolate(value, env, where)
        if whole and value.strip():
            with contextlib.suppress(yaml.YAMLError):  # not a YAML scalar: keep the text
                value = yaml.safe_load(value)
    return value


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` becomes once aliases are expanded (linear in the node graph).

    An alias is the same node object used twice, and building copies it each
    time, so a few lines of nested aliases ("billion laughs") would build
    billions of values; this counts them without building any.
    """
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_VALUES + 1  # a node inside itself (a recursive alias) is too large
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _check_unicode(text: str, where: str) -> None:
    """Refuse a lone surrogate (``"\\ud800"``): it cannot be printed, logged or stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ConfigError(
            f"the string holds {bad!a} at character {exc.start + 1}, "
            "a lone UTF-16 surrogate that is not valid Unicode",
            where,
        ) from None


def _has_alias(text: str) -> bool:
    return any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text, _LOADER))


def _too_deep(text: str, filename: str) -> str:
    """``file:line:col`` where the nesting of ``text`` first passes ``MAX_DEPTH``, or ''.

    Raises:
        yaml.YAMLError: the text is not YAML (reported by the caller).
    """
    depth = 0
    for event in yaml.parse(text, _LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                return f"{filename}:{mark.line + 1}:{mark.column + 1}"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return ""


def _mark(filename: str, node: yaml.Node) -> str:
    return f"{filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
