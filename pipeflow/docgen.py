"""The stage and YAML reference, generated from the option structs.

Each option's documentation is the string literal written under its field in
the options struct (the attribute-docstring convention), read with ``ast``;
types and defaults come from ``msgspec.structs.fields``. ``docs/yaml.md`` is
this module's output, and a test keeps it current.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from typing import Any

import msgspec
from rich.table import Table

from pipeflow.stage import Stage

__all__ = ["field_docs", "option_rows", "stage_reference", "stages_table", "yaml_reference"]


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a class (and its bases), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, msgspec.Struct):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, [*body[1:], None], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    """A short readable name for an annotation: ``list[str]``, ``int | None``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        bounds = [_bounds(m) for m in args[1:] if isinstance(m, msgspec.Meta)]
        bounds = [b for b in bounds if b]
        return _type_name(args[0]) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", None) or repr(tp).replace("typing.", "")


def _bounds(meta: msgspec.Meta) -> str:
    """The range a ``msgspec.Meta`` allows, as validation checks it: ``1 to 768000``, ``> 0``."""
    if meta.ge is not None and meta.le is not None:
        return f"{meta.ge:g} to {meta.le:g}"
    marks = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    return ", ".join(
        f"{sign} {getattr(meta, key):g}" for key, sign in marks if getattr(meta, key) is not None
    )


def _default(info: msgspec.structs.FieldInfo) -> str:
    if info.default is not msgspec.NODEFAULT:
        return repr(info.default)
    if info.default_factory is not msgspec.NODEFAULT:
        try:
            return repr(info.default_factory())
        except Exception:  # pragma: no cover - a factory that needs context
            return "(computed)"
    return "required"


def option_rows(options: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, doc) for every field of an options struct."""
    docs = field_docs(options)
    return [
        (info.encode_name, _type_name(info.type), _default(info), docs.get(info.name, ""))
        for info in msgspec.structs.fields(options)
    ]


def _cell(text: str) -> str:
    """Text for a markdown table cell: a bare ``|`` (``int | None``) would split the cell."""
    return text.replace("|", "\\|")


def _frames(types: tuple[type, ...]) -> str:
    return ", ".join(t.__name__ for t in types) or "-"


def _summary(cls: type[Stage]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def stages_table(stages: dict[str, type[Stage]]) -> Table:
    """A rich table of stages and their options for ``pipeflow stages``."""
    table = Table(title="pipeflow stages", show_lines=True, title_justify="left")
    table.add_column("stage", style="bold cyan", no_wrap=True)
    table.add_column("what it does")
    table.add_column("options (type = default)")
    for name, cls in sorted(stages.items()):
        rows = option_rows(cls.Options)
        opts = "\n".join(
            f"[bold]{n}[/]: {t} = {d}" + (f"\n  [dim]{doc}[/]" if doc else "")
            for n, t, d, doc in rows
        )
        flow = f"\n[dim]in: {_frames(cls.consumes)}; out: {_frames(cls.produces)}[/]"
        table.add_row(name, _summary(cls) + flow, opts or "[dim](none)[/]")
    return table


def stage_reference() -> str:
    """Markdown reference of every built-in stage."""
    from pipeflow.registry import registry

    parts = ["# Stage reference\n\nGenerated by `pipeflow stages --markdown`; do not edit.\n"]
    builtins = {n: c for n, c in registry.all().items() if c.__module__.startswith("pipeflow.")}
    for name, cls in sorted(builtins.items()):  # not plug-ins, nor stages of a test
        parts.append(f"\n## `{name}`\n\n{inspect.getdoc(cls) or ''}\n")
        parts.append(
            f"\nFrames in: {_frames(cls.consumes)}. Frames out: {_frames(cls.produces)}."
        )
        if cls.is_duplex():
            parts.append(
                f" Accepts from later stages: {_frames(cls.accepts) if cls.accepts else '-'}."
            )
        rows = option_rows(cls.Options)
        if rows:
            parts.append("\n\n| option | type | default | description |\n|---|---|---|---|\n")
            for n, t, d, doc in rows:
                row = f"| `{n}` | `{_cell(t)}` | `{d}` | {doc.replace('|', '/')} |\n"
                parts.append(row.replace("``", "` `"))
        else:
            parts.append("\n\nNo options.\n")
    return "".join(parts)


def yaml_reference() -> str:
    """Markdown reference of the pipeline file format plus every stage."""
    from pipeflow.config import AgentConfig

    header = """# YAML reference

Generated from the option structs by `python -m pipeflow.docgen`; a test keeps
it current. Do not edit by hand.

A pipeline file:

```yaml
name: my-pipeline          # used in logs and summaries
description: ""            # free text
output_dir: out            # where sinks write by default
inbox_size: 64             # queue bound of each duplex stage (back-pressure)
agent:                     # optional: who the pipeline talks as
  instructions: ...
stages:                    # ordered; each is `type` + that stage's options
  - type: wav
    path: caller.wav
  - type: mypkg.stages:Denoise   # your own stage by reference
    id: denoise                  # optional id for --set and logs
```

Strings may use `${VAR}` and `${VAR:-default}` from the environment; a value
that is only `${VAR}` is read as YAML (so numbers stay numbers). `pipeflow run
FILE --set STAGE.OPTION=VALUE` overrides an option (STAGE is an id, a type or
a 0-based index); `pipeflow validate FILE` checks a file without running it.

## `agent` section

| field | type | default | description |
|---|---|---|---|
"""
    rows = "".join(
        f"| `{n}` | `{_cell(t)}` | `{d}` | {doc} |\n" for n, t, d, doc in option_rows(AgentConfig)
    )
    return header + rows + "\n" + stage_reference().replace("# Stage reference", "# Stages", 1)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(yaml_reference())
