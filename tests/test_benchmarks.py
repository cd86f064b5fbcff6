"""The benchmark suite: the runner, the headline figures and the scale search.

Speed is never asserted here (the machines are shared); what is tested is
that the suite runs, writes where it is told, and judges goals correctly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import bench_cost, bench_scale, bench_worker
from benchmarks.__main__ import headline_rows, write_headline
from benchmarks.bench_latency import Turn, summarise
from benchmarks.report import write_section

ROOT = Path(__file__).resolve().parent.parent


def test_quick_suite_writes_its_tables_to_the_results_dir(tmp_path: Path) -> None:
    committed = (ROOT / "benchmarks" / "results.md").read_bytes() if (
        ROOT / "benchmarks" / "results.md").exists() else None
    env = {**os.environ, "PIPEFLOW_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "micro,pipeline"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "results.md").read_text()
    # The headline comes first, then each benchmark's own section with its command.
    assert text.index("<!-- begin headline -->") < text.index("<!-- begin micro -->")
    assert "Command: `python -m benchmarks.bench_micro --quick`" in text
    assert "Command: `python -m benchmarks.bench_pipeline --quick`" in text
    assert "| encode 20 ms audio frame | msgspec msgpack |" in text
    store = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "micro", "pipeline", "headline"} <= set(store)
    assert store["machine"]["cores"] >= 1
    assert [r["stages"] for r in store["pipeline"]["data"]] == [1, 5, 10]
    if committed is not None:
        assert (ROOT / "benchmarks" / "results.md").read_bytes() == committed


def _copy_of_suite(tmp_path: Path) -> tuple[Path, bytes]:
    """A copy of the benchmark package with tracked results of its own to protect."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "benchmarks", repo / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__", "out"))
    tracked = b"# a full run's results\n"
    (repo / "benchmarks" / "results.md").write_bytes(tracked)
    (repo / "benchmarks" / "results.json").write_bytes(b"{}")
    return repo, tracked


@pytest.mark.parametrize("flags", [["--quick", "--only", "micro"], ["--only", "micro"]])
def test_quick_or_partial_runs_never_touch_the_tracked_results(
    tmp_path: Path, flags: list[str]
) -> None:
    repo, tracked = _copy_of_suite(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PIPEFLOW_RESULTS_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *flags], cwd=repo, env=env,
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (repo / "benchmarks" / "results.md").read_bytes() == tracked
    assert (repo / "benchmarks" / "results.json").read_bytes() == b"{}"
    scratch = repo / "out" / "bench"
    assert "<!-- begin micro -->" in (scratch / "results.md").read_text()
    assert str(scratch) in done.stdout  # the run says where its figures went


def test_a_quick_module_run_writes_to_the_scratch_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import report

    monkeypatch.delenv("PIPEFLOW_RESULTS_DIR", raising=False)
    assert report.results_dir("python -m benchmarks.bench_scale --quick") == report.SCRATCH_DIR
    assert report.results_dir("python -m benchmarks.bench_scale") == report.HERE


def test_unknown_benchmark_name_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nonsense"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "unknown benchmark(s) nonsense" in done.stderr


def _lim(n: int, refined: bool = True) -> dict:
    return {"sessions": n, "refined": refined, "capped": False}


def _store(pipeline_ratio: float, resample: float, added: float, ours: int, lean: int,
           live: int, hand: int, share: float, push_ratio: float, kib: float) -> dict:
    goals = {
        "live_vs_hand": {"ratio": live / hand, "met": live / hand >= 1.25},
        "audio_floor_share": {"share": share, "floor": 1000, "at": int(share * 1000),
                              "met": share >= 0.75},
        "push_vs_file_cpu": {"at": 100, "file_us": 20.0, "push_us": 20.0 * push_ratio,
                             "ratio": push_ratio, "met": push_ratio <= 1},
        "kib_per_session": {"kib": kib, "met": kib < 100},
    }
    return {
        "pipeline": {"data": [{"stages": 5, "ratio": pipeline_ratio}]},
        "audio_resample": {"data": {"16k->24k": {"ratio": resample}}},
        "latency": {"data": {"added_p99_ms": added}},
        "pipecat": {"data": {"scale": {
            "pipeflow, fed like a live call (pacer per session -> PushSource)": _lim(ours),
            "Pipecat 1.x defaults (pacer per session -> queue_frame)": _lim(lean // 2),
            "Pipecat lean: RTVI, turn tracking, idle observer off (same pacer)": _lim(lean),
        }}},
        "scale": {"data": {"limits": {"audio-push": _lim(live), "bare": _lim(hand),
                                      "bare-push": _lim(hand // 2)},
                           "goals": goals}},
    }


def test_headline_marks_each_goal_met_or_not() -> None:
    good = headline_rows(_store(1.2, 1.1, 0.5, 2000, 60, 1300, 1000, 0.8, 0.9, 20.0))
    assert [row[2] for row in good] == ["met"] * 8
    bad = headline_rows(_store(1.6, 1.3, 1.5, 500, 60, 1200, 1000, 0.7, 1.2, 150.0))
    assert [row[2] for row in bad] == ["NOT met"] * 8
    assert "500 vs 60 (8.3x)" in bad[3][1]
    assert "1,200 vs 1,000 (1.20x)" in bad[4][1]  # against the better hand-written feeding


def test_headline_shows_a_cap_as_a_cap() -> None:
    store = _store(1.2, 1.1, 0.5, 2000, 60, 1300, 1000, 0.8, 0.9, 20.0)
    scale = store["pipecat"]["data"]["scale"]
    scale["pipeflow, fed like a live call (pacer per session -> PushSource)"] = _lim(640, False)
    row = headline_rows(store)[3]
    assert row[1].startswith(">= 640 (cap) vs 60")


def test_headline_says_what_was_not_measured() -> None:
    rows = headline_rows({})
    assert rows and all(row[2] == "not measured" for row in rows)


def test_headline_goes_to_the_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEFLOW_RESULTS_DIR", str(tmp_path))
    write_section("one", "One", "body one", "cmd one", {"x": 1})
    write_headline("python -m benchmarks")
    write_section("two", "Two", "body two", "cmd two")
    write_headline("python -m benchmarks")  # replaced in place, still first
    text = (tmp_path / "results.md").read_text()
    assert text.count("<!-- begin headline -->") == 1
    assert text.index("begin headline") < text.index("begin one") < text.index("begin two")
    assert text.startswith("# pipeflow benchmark results")


@settings(max_examples=80, deadline=None)
@given(threshold=st.integers(min_value=0, max_value=20_000), top=st.sampled_from([640, 50_000]))
def test_scale_search_refines_every_limit_or_reports_a_cap(threshold: int, top: int) -> None:
    calls: list[int] = []

    def step(n: int) -> dict:
        calls.append(n)
        return {"sessions": n, "ok": n <= threshold}

    limit, steps = bench_scale.search(step, 1e9, top=top, log=lambda _: None)
    assert limit["sessions"] <= threshold
    assert limit["sessions"] == max([s["sessions"] for s in steps if s["ok"]], default=0)
    assert len(calls) == len(set(calls))
    if threshold >= top:  # the top step passed: a cap, never a limit
        assert limit["capped"] and not limit["refined"]
        assert bench_scale.limit_text(limit) == f">= {top:,} (cap: top step)"
    else:  # the first failure lies within 10% of the limit
        assert limit["refined"]
        bad = limit["first_failure"]
        assert bad is not None and bad - limit["sessions"] <= max(1, 0.1 * limit["sessions"])
        assert not bench_scale.limit_text(limit).startswith(">=")


def test_scale_search_cut_by_the_budget_is_a_cap() -> None:
    limit, steps = bench_scale.search(
        lambda n: {"sessions": n, "ok": True}, -1.0, log=lambda _: None
    )
    assert steps == [] and not limit["refined"]
    assert bench_scale.limit_text(limit) == ">= 0 (cap: time budget)"


@pytest.mark.parametrize(
    "scenario", ["passthrough", "passthrough-push", "audio", "audio-push", "bare", "bare-push"]
)
async def test_scale_step_measures_every_frame(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_scale, "RAMP_S", 0.05)
    monkeypatch.setattr(bench_scale, "WARMUP_S", 0.1)
    monkeypatch.setattr(bench_scale, "MEASURE_S", 0.3)
    wav = bench_scale._speech_wav(tmp_path, 0.45)
    result = await bench_scale.run_step(scenario, 3, wav)
    assert result["missing"] == 0 and result["unfinished"] == 0 and not result["errors"]
    # Only frames due in the steady window count; the resampler emits in soxr's own
    # blocks (734 samples), so some source frames yield no output frame.
    expected = 3 * 15
    low = expected // 2 if scenario.startswith(("audio", "bare")) else expected - 3
    assert low <= result["frames"] <= expected + 3
    assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 1000
    assert 0 <= result["startup_p50_ms"] <= result["startup_max_ms"] < 1000
    assert result["cpu_us_per_frame"] > 0


def test_latency_summary_subtracts_the_bare_client() -> None:
    turns = []
    for i in range(10):
        turn = Turn()
        turn.vad_delay = 0.5
        turn.decision, turn.create, turn.delta = 1.0, 1.0004, 1.0005
        turn.transport, turn.sink = 1.0008, 1.001 + i * 1e-5
        turns.append(turn)
    result = summarise(turns, [0.0006] * 10)
    assert result["turns"] == 10
    assert result["added_p50_ms"] == pytest.approx(1.04 - 0.6, abs=0.001)
    stages = result["stages"]
    assert stages["VAD decision (stream time, VAD's own)"]["p99_ms"] == pytest.approx(500)
    assert stages["sink (AudioFrame -> first audio playing)"]["p50_ms"] == pytest.approx(
        0.25, abs=0.01)
    assert np.isfinite(result["added_p99_ms"])


def test_scale_search_interleaves_scenarios_and_retries_a_failed_step() -> None:
    order: list[tuple[str, int]] = []
    flaky = {"b": {20}}  # b fails its first try at N=20, then passes

    def make(name: str, threshold: int):
        def step(n: int) -> dict:
            order.append((name, n))
            if n in flaky.get(name, set()):
                flaky[name].discard(n)
                return {"sessions": n, "ok": False}
            return {"sessions": n, "ok": n <= threshold}
        return step

    limits, steps = bench_scale.search_all(
        {"a": make("a", 25), "b": make("b", 45)}, 1e9, precision=1.0, retries=1,
        log=lambda _: None,
    )
    assert {k: v["sessions"] for k, v in limits.items()} == {"a": 20, "b": 40}
    assert order[:4] == [("a", 10), ("b", 10), ("a", 20), ("b", 20)]
    assert [s["attempt"] for s in steps["b"] if s["sessions"] == 20] == [1, 2]


def test_compare_search_jumps_to_the_n_its_cpu_predicts_and_refines_to_10_percent() -> None:
    # A chain whose CPU per frame is 20 µs and that holds 700 sessions: the guided search
    # (--compare) goes 50 -> 4x -> the N 70% of 20 ms / 20 µs names, then bisects.
    tried: list[int] = []

    def step(n: int) -> dict:
        tried.append(n)
        return {"sessions": n, "ok": n <= 700, "cpu_us_per_frame": 20.0}

    limits, _ = bench_scale.search_all({"c": step}, 1e9, start=50, growth=1.25, retries=0,
                                       guess=True, log=lambda _: None)
    assert tried[:3] == [50, 200, 700]
    limit = limits["c"]
    assert limit["refined"] and 700 / 1.1 <= limit["sessions"] <= 700
    assert len(tried) <= 7  # a doubling search from 10 takes 10 or more


def test_audio_floor_measures_the_work_alone(tmp_path: Path) -> None:
    wav = bench_scale._speech_wav(tmp_path, 0.2)
    floor = bench_scale.audio_floor(4, 0.2, wav)
    assert floor["sessions"] == 4 and floor["cpu_us_per_frame"] > 0
    assert floor["ceiling"] == int(20_000 / floor["cpu_us_per_frame"])


def _children() -> list[int]:
    """Processes whose parent is this one (still running or not yet reaped)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended while we looked
            if int(fields[1]) == me:
                found.append(int(entry.name))
    return found


async def test_orderline_probe_measures_calls_and_leaves_nothing_running() -> None:
    import asyncio

    affinity = os.sched_getaffinity(0)
    leftovers = set(Path(tempfile.gettempdir()).glob("pipeflow-bench-orderline-*"))
    # Earlier tests may leave this process's own decoding pools running: only
    # processes the probe started count.
    before = set(_children())
    stats = await bench_worker.orderline_call_probe(2, 3.0)
    assert stats.calls == 2 and stats.frames > 0
    assert 0 <= stats.p50_ms <= stats.p99_ms <= stats.max_ms
    assert isinstance(stats.rss_per_call_kib, float)
    assert stats.agent_audio_s is not None and stats.agent_audio_s > 0  # the model answered
    # Nothing left behind: the server process, the calls' tasks, the folders, the pinning.
    assert set(_children()) - before == set()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert set(Path(tempfile.gettempdir()).glob("pipeflow-bench-orderline-*")) == leftovers
    assert os.sched_getaffinity(0) == affinity


def test_rewrite_drops_stray_text_between_and_after_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEFLOW_RESULTS_DIR", str(tmp_path))
    write_section("one", "One", "body one", "cmd one")
    md = tmp_path / "results.md"
    stray = "\n" * 25 + "| stray goal | - | not measured | x |\n"
    md.write_text(md.read_text() + stray)
    for _ in range(3):  # rewriting again and again adds no blank lines
        write_section("one", "One", "body one", "cmd one")
    write_headline("python -m benchmarks")
    text = md.read_text()
    assert "stray goal" not in text
    assert "\n\n\n" not in text
    assert text.endswith("<!-- end one -->\n")


def test_live_entry_cpu_goal_is_judged_on_the_measured_figure() -> None:
    store = _store(1.2, 1.1, 0.5, 2000, 60, 1300, 1000, 0.8, 1.13, 20.0)
    push = store["scale"]["data"]["goals"]["push_vs_file_cpu"]
    push.update(pacer_us=10.0, entry_us=push["push_us"] - 10.0, met=True)  # an old, kind verdict
    row = headline_rows(store)[6]
    assert row[2] == "NOT met"
    assert "22.6 - pacer 10.0 = 12.6 µs" in row[1] and "not the verdict" in row[1]


def test_headline_quotes_the_pass_through_range_and_labels_the_p99_difference() -> None:
    store = _store(1.2, 1.1, 0.5, 2000, 60, 1300, 1000, 0.8, 0.9, 20.0)
    store["pipeline"]["data"] = [{"stages": 1, "ratio": 1.01}, {"stages": 5, "ratio": 0.98},
                                 {"stages": 10, "ratio": 1.07}]
    rows = headline_rows(store)
    assert rows[0][1].startswith("0.98x-1.07x")
    assert "difference of p99s, not a p99 of differences" in rows[2][1]


def test_readme_states_the_measured_machine_and_the_suite_bound() -> None:
    from benchmarks.report import suite_bound_s

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Benchmarks"):readme.index("## More")]
    results = (ROOT / "benchmarks" / "results.md").read_text()
    cpu = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]["cpu"]
    assert cpu in section and cpu in results
    bound = f"at most {suite_bound_s():,} s"
    assert bound in section and bound in results
    assert "in one run" not in results.split("<!-- begin ")[0]


@pytest.mark.parametrize("chain", sorted(bench_cost.CHAINS))
def test_every_counted_chain_runs_to_the_end(chain: str, tmp_path: Path) -> None:
    """bench_cost's sessions finish on the manual clock (valgrind only counts them)."""
    for frames in (0, 6):
        bench_cost._wav(tmp_path, frames)
        bench_cost.child(chain, 3, frames, tmp_path)


def test_headline_judges_the_live_entry_on_counted_instructions() -> None:
    store = {"cost": {"data": {"instructions": {"audio": 150_000, "audio-push": 165_000,
                                                "pacer": 20_000}, "ratios": {}}}}
    row = next(r for r in headline_rows(store) if r[0].startswith("live-call entry"))
    assert row[2] == "met" and "145,000 vs 150,000" in row[1]
    store["cost"]["data"]["instructions"]["pacer"] = 10_000  # the chain behind: 155,000
    row = next(r for r in headline_rows(store) if r[0].startswith("live-call entry"))
    assert row[2] == "NOT met"
