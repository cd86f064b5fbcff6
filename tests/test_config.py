"""Pipeline files: validation messages, interpolation, overrides, properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeflow.config import load_config, parse_config
from pipeflow.errors import ConfigError
from pipeflow.pipeline import Pipeline
from pipeflow.yamlsource import interpolate

BROKEN = Path(__file__).parent / "data" / "broken"

EXPECTED = {
    "unknown_stage.yaml": ("4:5", "unknown stage type 'lgo' (did you mean 'log'?)"),
    "misspelled_option.yaml": ("4:5", "unknown option 'levle' (did you mean 'level'?)"),
    "wrong_type.yaml": ("4:5", "option 'skip': expected array, got int"),
    "wrong_type_int.yaml": ("4:5", "option 'webhook_retries': expected int, got str"),
    "missing_type.yaml": ("3:5", "missing 'type'"),
    "bad_yaml.yaml": ("4:4", "invalid YAML"),
    "unknown_top_level.yaml": ("2:1", "unknown field 'stagse' (did you mean 'stages'?)"),
    "empty_stages.yaml": ("2:1", "'stages' is empty"),
    "missing_env.yaml": ("4:12", "environment variable PIPEFLOW_TEST_SURELY_UNSET is not set"),
    "bad_reference.yaml": ("3:5", "cannot import module 'nosuchmodule.stages'"),
    "agent_field.yaml": ("4:3", "unknown field 'voise' (did you mean 'voice'?)"),
    "not_a_mapping.yaml": ("", "must be a mapping"),
    "negative_rate.yaml": ("4:5", "option 'sample_rate': must be >= 1, got -8000"),
    "zero_frame_ms.yaml": ("4:5", "option 'frame_ms': must be > 0.0, got 0"),
    "misspelled_choice.yaml": (
        "4:5",
        "option 'engine': invalid value 'enrgy' (did you mean 'energy'?); "
        "valid values: energy, webrtc, silero",
    ),
    "bare_null_type.yaml": ("4:5", 'stage 2: \'type\' is empty'),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_message_names_file_line_and_field(name: str) -> None:
    where, text = EXPECTED[name]
    with pytest.raises(ConfigError) as info:
        load_config(BROKEN / name)
    message = str(info.value)
    assert message.startswith(f"{BROKEN / name}:{where}" if where else str(BROKEN / name))
    assert text in message


def test_every_broken_file_is_covered() -> None:
    assert {p.name for p in BROKEN.glob("*.yaml")} == set(EXPECTED)


def test_stage_label_names_index_and_type() -> None:
    with pytest.raises(ConfigError, match=r"stage 1 \(log\)"):
        load_config(BROKEN / "misspelled_option.yaml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yaml")


def test_interpolation_types_and_defaults() -> None:
    text = "name: ${NAME:-demo}\nstages:\n  - type: callbacks\n    webhook_retries: ${R:-5}\n"
    config = parse_config(text, env={})
    assert config.name == "demo"
    assert config.stages[0].options.webhook_retries == 5
    config = parse_config(text, env={"NAME": "x", "R": "7"})
    assert config.name == "x"
    assert config.stages[0].options.webhook_retries == 7


def test_quoted_interpolation_stays_a_string() -> None:
    text = 'name: "${N}"\nstages:\n  - type: passthrough\n'
    assert parse_config(text, env={"N": "123"}).name == "123"


def test_overrides() -> None:
    text = "stages:\n  - type: callbacks\n    id: cb\n"
    config = parse_config(text, overrides=["cb.webhook_retries=9"])
    assert config.stages[0].options.webhook_retries == 9
    config = parse_config(text, overrides=["callbacks.webhook_retries=8"])
    assert config.stages[0].options.webhook_retries == 8
    with pytest.raises(ConfigError, match="did you mean 'cb'"):
        parse_config(text, overrides=["cbb.webhook_retries=1"])
    with pytest.raises(ConfigError, match=r"STAGE\.OPTION=VALUE"):
        parse_config(text, overrides=["nonsense"])
    with pytest.raises(ConfigError, match="unknown option 'retries'"):
        parse_config(text, overrides=["cb.retries=1"])


def test_override_errors_name_the_set_not_the_file() -> None:
    text = "stages:\n  - type: resample\n    rate: 24000\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", overrides=["resample.rat=8000"])
    assert str(info.value).startswith("p.yaml: --set 'resample.rat=8000': stage 1 (resample)")
    assert "did you mean 'rate'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", overrides=["0.rate=-1"])
    assert str(info.value).startswith("p.yaml: --set '0.rate=-1': stage 1 (resample)")
    assert "must be >= 1, got -1" in str(info.value)
    # An error in the file itself is still located in the file.
    with pytest.raises(ConfigError, match=r"^p\.yaml:3:5: "):
        parse_config(text.replace("24000", "0"), "p.yaml", overrides=["resample.quality=LQ"])


def test_choice_suggestions_ignore_case() -> None:
    text = "stages:\n  - type: resample\n    rate: 24000\n    quality: hq\n"
    with pytest.raises(ConfigError, match=r"invalid value 'hq' \(did you mean 'HQ'\?\)"):
        parse_config(text, "p.yaml")


def test_overrides_on_a_file_whose_stages_are_not_a_list() -> None:
    with pytest.raises(ConfigError, match="no stage 'a'"):
        parse_config("stages: 3\n", "p.yaml", overrides=["a.b=1"])


def test_range_checked_options_still_take_good_values() -> None:
    text = "stages:\n  - type: tone\n    sample_rate: 8000\n    frame_ms: 10\n"
    options = parse_config(text).stages[0].options
    assert (options.sample_rate, options.frame_ms) == (8000, 10.0)


def test_alias_bombs_are_refused_before_they_expand() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):  # 10**9 values once expanded
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    text = "\n".join([*lines, "stages: [{type: tone}]"]) + "\n"
    bomb = r"^bomb\.yaml: the file holds more than 100,000 values once YAML aliases"
    with pytest.raises(ConfigError, match=bomb):
        parse_config(text, "bomb.yaml")
    with pytest.raises(ConfigError, match="holds more than"):  # an alias inside itself
        parse_config("a: &a [*a]\nstages: [{type: tone}]\n", "self.yaml")


def test_small_aliases_still_work() -> None:
    text = "x: &opts {duration_ms: 40}\nstages:\n  - {type: tone, <<: *opts}\n"
    with pytest.raises(ConfigError, match="unknown field 'x'"):  # aliases expand, then validate
        parse_config(text, "p.yaml")
    text = "stages:\n  - &t {type: tone, duration_ms: 40}\n  - *t\n"
    assert [s.options.duration_ms for s in parse_config(text).stages] == [40.0, 40.0]


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        parse_config("name: a\nname: b\nstages:\n  - type: log\n", "f.yaml")


def test_duplicate_stage_ids() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        parse_config("stages:\n  - type: log\n    id: a\n  - type: log\n    id: a\n")


async def test_user_stage_module_runs_from_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "seen.txt"
    monkeypatch.setenv("COLLECT_PATH", str(out))
    config = load_config(Path(__file__).parent / "data" / "userstages" / "pipeline.yaml")
    result = await Pipeline.from_config(config).run()
    assert result.ok
    assert out.read_text() == "HELLO!!"


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_any_text_gives_config_error_or_config(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml", env={})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


yaml_scalars = st.one_of(
    st.integers(), st.booleans(), st.text(max_size=10), st.none(), st.floats(allow_nan=False)
)


pipeline_texts = st.text(max_size=200) | st.sampled_from(
    ["stages: 3\n", "stages: {a: 1}\n", "stages:\n  - tone\n", "stages:\n  - type: tone\n"]
)
set_items = st.from_regex(r"[a-z0-9]{1,8}\.[a-z_]{1,12}=[^\n]{0,8}", fullmatch=True) | st.text(
    max_size=20
)


@settings(max_examples=300)
@given(pipeline_texts, st.lists(set_items, max_size=3))
def test_any_text_with_any_overrides_gives_config_error_or_config(
    text: str, overrides: list[str]
) -> None:
    try:
        parse_config(text, "fuzz.yaml", overrides=overrides, env={})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=200)
@given(st.dictionaries(st.text(min_size=1, max_size=10), yaml_scalars, max_size=4))
def test_random_options_are_accepted_or_named(options: dict[str, object]) -> None:
    import yaml

    text = yaml.safe_dump({"stages": [{"type": "callbacks", **options}]})
    try:
        parse_config(text, "p.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("p.yaml:")
        assert "stage 1 (callbacks)" in str(exc) or "'type'" in str(exc) or "id" in str(exc)


@given(
    st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_characters="}$"), max_size=10),
    st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_characters="}$"), max_size=10)),
)
def test_interpolate_property(name: str, default: str, value: str | None) -> None:
    env = {} if value is None else {name: value}
    got = interpolate(f"a${{{name}:-{default}}}b", env)
    expected = value if value else default
    assert got == f"a{expected}b"
