"""Generated documentation is current."""

from __future__ import annotations

from pathlib import Path

from pipeflow.docgen import field_docs, option_rows, yaml_reference

ROOT = Path(__file__).resolve().parent.parent


def test_yaml_reference_is_current() -> None:
    current = (ROOT / "docs" / "yaml.md").read_text()
    assert current == yaml_reference(), "docs/yaml.md is stale: run `make docs`"


def test_every_builtin_option_is_documented() -> None:
    from pipeflow.registry import registry

    missing = [
        f"{name}.{row[0]}"
        for name, cls in registry.all().items()
        for row in option_rows(cls.Options)
        if not row[3]
    ]
    assert not missing, f"options without a docstring: {missing}"


def test_field_docs_reads_attribute_docstrings() -> None:
    from pipeflow.stages.basic import LogOptions

    docs = field_docs(LogOptions)
    assert docs["level"].startswith("Logging level")
