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


def test_option_bounds_are_documented_and_tables_stay_whole() -> None:
    from pipeflow.stages.resample import ResampleOptions
    from pipeflow.stages.sources import ToneOptions

    types = {row[0]: row[1] for row in option_rows(ToneOptions)}
    assert types["sample_rate"] == "int (1 to 768000)"
    assert types["frame_ms"] == "float (> 0)"
    assert types["amplitude"] == "float (0 to 1)"
    assert {row[0]: row[1] for row in option_rows(ResampleOptions)}["rate"] == (
        "int (1 to 768000) | None"
    )
    for line in yaml_reference().splitlines():
        if line.startswith("| `"):  # option rows: exactly four cells, whatever the type
            assert len(line.replace("\\|", "").split("|")) == 6, line


def test_stage_reference_lists_only_built_in_stages() -> None:
    from pipeflow.docgen import stage_reference
    from pipeflow.stage import Stage

    class Extra(Stage):
        name = "test_only_extra_stage"

    try:
        assert "test_only_extra_stage" not in stage_reference()
    finally:
        from pipeflow.registry import registry

        registry._stages.pop("test_only_extra_stage", None)
