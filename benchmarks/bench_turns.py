"""Turn taking scored on a corpus with known truth: cut-offs, turn-end delay, interruptions.

The corpus (``benchmarks.turn_corpus``) is espeak-ng speech with
mid-sentence pauses of 200-800 ms, short answers, backchannels, noise
bursts and coughs over the agent's answer, and real barge-ins, at 16 kHz
and 8 kHz mu-law, clean and at 20 and 10 dB SNR. Each case runs through
the VAD, the end-of-turn tracker, the conversation engine and the sink's
playout clock (``benchmarks.turn_sim``), with and without the pocketsphinx
recogniser, and is scored against its truth:

- false cut-offs: a turn committed before its end (more than 200 ms before the last
  sample above 1% of the peak: the quiet tail of a word is lost under noise);
- missed turn ends: no commit within 3 s of the end of the turn;
- end-of-turn delay: end of the last word to the commit (short answers: p50, p95);
- false interruptions: a backchannel, noise or cough that cancelled the agent;
- barge-in reaction: the true speech onset to the agent's audio stopping at the sink.

Then the main thresholds are swept (``interrupt_min_ms``, ``min_delay_ms``)
to show what each trades against what.

    python -m benchmarks.bench_turns [--quick] [--seeds 20 7]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import msgspec

from benchmarks.report import machine_info, markdown_table, write_section
from benchmarks.turn_corpus import CONDITIONS, Case, build_cases, sentences
from benchmarks.turn_sim import (
    END_SLACK_S,
    VAD,
    CachedTranscriber,
    Outcome,
    percentile,
    run_case,
)
from pipeflow.turn_detect.options import TurnOptions

__all__ = ["main", "run", "score"]

QUIET = ("backchannel", "noise", "cough")
SENSITIVE_VAD = msgspec.structs.replace(VAD, margin_db=9.0)
"""A VAD that hears more of the speech at 10 dB SNR (the default margin is 12 dB)."""
WEBRTC_VAD = msgspec.structs.replace(VAD, engine="webrtc")
SILERO_VAD = msgspec.structs.replace(VAD, engine="silero")
"""The optional engines in front of the same end-of-turn stage (silero needs its extra)."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _cut_pauses(outcome: Outcome) -> list[int]:
    """Where a turn was committed before its end: the pause (ms) it fell in, 0 for a
    commit inside a phrase (at a comma the synthesiser made)."""
    case = outcome.case
    cut = []
    for t in outcome.commits:
        if t >= case.end - END_SLACK_S:
            continue
        pause = 0
        for i, ms in enumerate(case.pauses_ms):
            if case.sounds[i][1] <= t < case.sounds[i + 1][0] + 0.2:
                pause = ms
        cut.append(pause)
    return cut


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts and percentiles over ``outcomes`` (see the module docstring)."""
    by: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.case.kind, []).append(o)
    pauses = by.get("pause", [])
    shorts = by.get("short", [])
    quiet = [o for k in QUIET for o in by.get(k, [])]
    barges = by.get("barge_in", [])
    cuts = [p for o in pauses + shorts for p in _cut_pauses(o)]
    short_delays = [d for o in shorts if (d := o.end_delay) is not None]
    all_delays = [d for o in pauses + shorts if (d := o.end_delay) is not None]
    reactions = [r for o in barges if (r := o.reaction) is not None]
    held = [o.held_s for o in quiet if o.stops]
    over = quiet + barges
    return {
        "pause_cases": len(pauses),
        "pauses": sum(len(o.case.pauses_ms) for o in pauses),
        "false_cutoffs": len(cuts),
        "false_cutoffs_le_600": sum(0 < p <= 600 for p in cuts),
        "false_cutoffs_gt_600": sum(p > 600 for p in cuts),
        "false_cutoffs_inside": sum(p == 0 for p in cuts),
        "missed_turn_ends": sum(1 for o in pauses + shorts
                                if o.end_delay is None or o.end_delay > 3.0),
        "short_cases": len(shorts),
        "short_delay_p50": percentile(short_delays, 0.5),
        "short_delay_p95": percentile(short_delays, 0.95),
        "turn_delay_p50": percentile(all_delays, 0.5),
        "turn_delay_p95": percentile(all_delays, 0.95),
        "quiet_cases": len(quiet),
        "false_interruptions": sum(o.interrupted_at is not None for o in quiet),
        "false_interruptions_backchannel": sum(o.interrupted_at is not None
                                               for o in by.get("backchannel", [])),
        "false_interruptions_noise": sum(o.interrupted_at is not None
                                         for k in ("noise", "cough") for o in by.get(k, [])),
        "false_turns": sum(o.turns_sent > 0 for o in quiet),
        "held_p50": percentile(held, 0.5),
        "false_pauses": sum(1 for o in over for t in o.stops if t < o.case.onset - 0.01),
        "barge_ins": len(barges),
        "missed_barge_ins": sum(o.interrupted_at is None for o in barges),
        "reaction_p50": percentile(reactions, 0.5),
        "reaction_p95": percentile(reactions, 0.95),
        "reaction_max": max(reactions) if reactions else None,
        "decodes": sum(len(o.decode_s) for o in outcomes),
        "decode_p50": percentile([d for o in outcomes for d in o.decode_s], 0.5),
    }


def run(cases: list[Case], options: TurnOptions, transcriber: object | None,
        decode_s: float | None = None, spotter: object | None = None) -> list[Outcome]:
    """Every case through the turn-taking parts (``decode_s``: see ``run_case``)."""
    return [run_case(case, options, transcriber, decode_s=decode_s, spotter=spotter)
            for case in cases]


_run = run


def recognisers() -> tuple[CachedTranscriber, CachedTranscriber]:
    """The turn recogniser (the corpus's domain model) and the default command spotter,
    each decoding a piece of audio once per process."""
    from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber
    from pipeflow.turn_detect.commands import command_spotter

    defaults = TurnOptions()
    return (CachedTranscriber(PocketsphinxTranscriber(sentences=sentences())),
            CachedTranscriber(command_spotter(defaults.commands, defaults.backchannels),
                              "spot"))


def _summary_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, s in results.items():
        rows.append([
            name, f"{s['false_cutoffs_le_600']} / {s['false_cutoffs_gt_600']} / "
                  f"{s['false_cutoffs_inside']} ({s['pauses']} pauses)",
            s["missed_turn_ends"], f"{_ms(s['short_delay_p50'])} / {_ms(s['short_delay_p95'])}",
            f"{_ms(s['turn_delay_p50'])} / {_ms(s['turn_delay_p95'])}",
            f"{s['false_interruptions_backchannel']} + {s['false_interruptions_noise']} "
            f"of {s['quiet_cases']}", _ms(s["held_p50"]),
            f"{s['missed_barge_ins']} of {s['barge_ins']}",
            f"{_ms(s['reaction_p50'])} / {_ms(s['reaction_p95'])}",
        ])
    return rows


SUMMARY_HEADERS = ["configuration",
                   "false cut-offs (in pauses <= 600 ms / in 700-800 ms / inside a phrase)",
                   "missed turn ends", "short answer delay p50 / p95 (ms)",
                   "all turns delay p50 / p95 (ms)",
                   "false interruptions (backchannel + noise/cough)",
                   "agent held on a false start p50 (ms)", "missed barge-ins",
                   "barge-in reaction p50 / p95 (ms)"]


BEFORE = TurnOptions(onset_margin_db=0.0, commands=())
"""The previous defaults: the agent paused on the VAD's onset only, no command spotting."""
SEEDS = (20, 7)


def _reaction(s: dict[str, Any]) -> str:
    return f"{_ms(s['reaction_p50'])} / {_ms(s['reaction_p95'])}"


def _by_condition(outcomes: list[Outcome], condition: Any) -> dict[str, Any]:
    return score([o for o in outcomes if o.case.condition == condition])


def main(quick: bool, seeds: tuple[int, ...] = SEEDS,
         decode_ms: float | None = None) -> dict[str, Any]:
    """Score the defaults with and without words, sweep the thresholds, write the section.

    ``decode_ms``: words come this long after a decode is asked for, instead of as
    long as it took here (for a machine shared with other jobs).
    """
    started = time.perf_counter()
    decode_s = None if decode_ms is None else decode_ms / 1000

    def run(cases: list[Case], options: TurnOptions, transcriber: object | None,
            spotter: object | None = None) -> list[Outcome]:
        return _run(cases, options, transcriber, decode_s, spotter)

    conditions = (CONDITIONS[0], CONDITIONS[5]) if quick else CONDITIONS
    cases = build_cases(conditions, small=quick, seed=seeds[0])
    words, spot = recognisers()
    defaults = TurnOptions()
    no_commands = msgspec.structs.replace(defaults, commands=())
    after = run(cases, defaults, words, spotter=spot)
    before = run(cases, BEFORE, words)
    outcomes = {
        "defaults, prosody only": run(cases, defaults, None),
        "defaults, with words (turn recogniser and command spotter)": after,
        "with words, no command spotting (`commands: []`)": run(cases, no_commands, words),
        "before: onset on the VAD only (`onset_margin_db: 0`), no command spotting": before,
        "prosody only, interrupt_voicing 0 (the VAD's speech only)": run(
            cases, msgspec.structs.replace(defaults, interrupt_voicing=0.0), None),
        "prosody only, VAD engine webrtc": [run_case(case, defaults, None, vad=WEBRTC_VAD)
                                            for case in cases],
        "prosody only, VAD engine silero (learned, ONNX)": [
            run_case(case, defaults, None, vad=SILERO_VAD) for case in cases],
    }
    results = {name: score(o) for name, o in outcomes.items()}
    reruns: dict[int, tuple[list[Outcome], list[Outcome]]] = {}
    for seed in seeds[1:]:
        other = build_cases(conditions, small=quick, seed=seed)
        reruns[seed] = (run(other, defaults, words, spotter=spot), run(other, BEFORE, words))
        results[f"seed {seed}: defaults, with words"] = score(reruns[seed][0])
        results[f"seed {seed}: before (onset on the VAD only, no command spotting)"] = score(
            reruns[seed][1])
    per_condition = []
    for condition in conditions:
        row: list[Any] = [condition.name]
        for now, then in [(after, before), *reruns.values()]:
            a, b = _by_condition(now, condition), _by_condition(then, condition)
            row += [_reaction(b), _reaction(a), f"{b['missed_barge_ins']} -> "
                    f"{a['missed_barge_ins']}", a["false_interruptions"]]
        a = _by_condition(after, condition)
        row += [a["false_cutoffs_le_600"], _ms(a["short_delay_p50"])]
        per_condition.append(row)
    per_condition_headers = ["condition"]
    for seed in seeds:
        per_condition_headers += [f"reaction p50 / p95 ms before (seed {seed})",
                                  f"after (seed {seed})",
                                  f"missed barge-ins before -> after (seed {seed})",
                                  f"false interruptions after (seed {seed})"]
    per_condition_headers += [f"false cut-offs <= 600 ms (seed {seeds[0]})",
                              f"short answer delay p50 ms (seed {seeds[0]})"]
    over = [c for c in cases if c.over_agent]
    turns = [c for c in cases if not c.over_agent]
    interrupt_sweep = []
    for min_ms in ((500, 900) if quick else (300, 500, 700, 800, 900, 1000, 1200)):
        row = [min_ms]
        for options, transcriber, spotter in (
                (msgspec.structs.replace(no_commands, interrupt_min_ms=min_ms), None, None),
                (msgspec.structs.replace(defaults, interrupt_min_ms=min_ms), words, spot)):
            options = msgspec.structs.replace(
                options, interrupt_sure_ms=max(min_ms, defaults.interrupt_sure_ms))
            s = score(run(over, options, transcriber, spotter=spotter))
            row += [f"{s['false_interruptions_backchannel']} + {s['false_interruptions_noise']}",
                    s["missed_barge_ins"], _ms(s["reaction_p95"])]
        interrupt_sweep.append(row)
    onset_sweep = []
    for margin in ((0.0, 6.0) if quick else (0.0, 3.0, 4.5, 6.0, 9.0, 12.0)):
        s = score(run(over, msgspec.structs.replace(defaults, onset_margin_db=margin), None))
        onset_sweep.append([margin, s["false_pauses"], _ms(s["held_p50"]),
                            f"{s['false_interruptions_backchannel']} + "
                            f"{s['false_interruptions_noise']}", s["missed_barge_ins"],
                            _reaction(s), _ms(s["reaction_max"])])
    delay_sweep = []
    for min_ms in ((250, 400) if quick else (250, 300, 350, 400, 450, 500, 600)):
        options = msgspec.structs.replace(defaults, min_delay_ms=min_ms)
        row = [min_ms]
        for transcriber in (None, words):
            s = score(run(turns, options, transcriber, spotter=spot if transcriber else None))
            row += [f"{s['false_cutoffs_le_600']} / {s['false_cutoffs_gt_600']} / "
                    f"{s['false_cutoffs_inside']}", _ms(s["short_delay_p50"]),
                    _ms(s["turn_delay_p50"])]
        delay_sweep.append(row)
    took = time.perf_counter() - started
    decode_p50 = results["defaults, with words (turn recogniser and command spotter)"][
        "decode_p50"]
    kinds: dict[str, int] = {}
    for case in cases:
        kinds[case.kind] = kinds.get(case.kind, 0) + 1
    body = "\n\n".join([
        f"{len(cases)} cases per seed ({', '.join(f'{n} {k}' for k, n in kinds.items())}) "
        f"under {len(conditions)} conditions ({', '.join(c.name for c in conditions)}), "
        f"each said in a voice and at a rate the seed picks; seeds {', '.join(map(str, seeds))}"
        f" (the tables are seed {seeds[0]} unless they say). Defaults: "
        f"`{_defaults_line(defaults)}`, VAD `min_silence_ms: 150, commit_on_silence: false`. "
        "The turn recogniser's language model is built from the corpus's own sentences plus "
        "fillers and backchannels (a domain model, as the order line builds one from its "
        "catalogue); the command spotter's grammar is only the default `commands`, "
        "`backchannels`, fillers and garbage. Reaction is measured from the first sample "
        "above 1% of the speech's peak to the end of the agent's last audio at the sink "
        "(it pauses on the tentative onset; the chunk playing finishes). A false pause is "
        "the agent paused before anyone spoke (steady background noise). A decode's words "
        + (f"arrive as late as the decode took here (p50 {_ms(decode_p50)} ms)."
           if decode_s is None else
           f"arrive {decode_ms:.0f} ms after the decode is asked for (fixed: the machine "
           f"was shared with other jobs, load {os.getloadavg()[0]:.1f} on "
           f"{machine_info()['cores']} cores, where a decode took p50 {_ms(decode_p50)} ms).")
        + f" Run time {took:.0f} s on {machine_info()['cpu']} "
        f"({machine_info()['cores']} cores).",
        markdown_table(SUMMARY_HEADERS, _summary_rows(results)),
        "Per condition, with words; before: onset on the VAD only, no command spotting:",
        markdown_table(per_condition_headers, per_condition),
        "Sweep of `onset_margin_db` (how far above the background the caller's level must "
        f"be for {defaults.onset_ms} ms to pause the agent; 0: the VAD's onset only), prosody "
        f"only, on the {len(over)} cases over the agent:",
        markdown_table(["onset_margin_db", "false pauses", "agent held on a false start p50 "
                        "(ms)", "false interruptions", "missed barge-ins",
                        "reaction p50 / p95 (ms)", "reaction max (ms)"], onset_sweep),
        "Sweep of `interrupt_min_ms` (speech over the agent needed before it is cut off; "
        f"`interrupt_sure_ms` {defaults.interrupt_sure_ms} or the same if larger), "
        f"on the {len(over)} cases over the agent; false interruptions are backchannel + "
        "noise/cough; with words, the command spotter also lets a shorter command through:",
        markdown_table(["interrupt_min_ms", "false interruptions (duration only)",
                        "missed barge-ins (duration only)", "reaction p95 ms (duration only)",
                        "false interruptions (words)", "missed barge-ins (words)",
                        "reaction p95 ms (words)"], interrupt_sweep),
        f"Sweep of `min_delay_ms` (`max_delay_ms` {defaults.max_delay_ms}), on the "
        f"{len(turns)} pause and short-answer cases; false cut-offs are in pauses <= 600 ms "
        "/ in 700-800 ms pauses / inside a phrase (at a comma, e.g. after the \"Yes,\" of "
        "\"Yes, please.\"):",
        markdown_table(["min_delay_ms", "false cut-offs (prosody)",
                        "short answer delay p50 ms (prosody)", "all turns delay p50 ms (prosody)",
                        "false cut-offs (words)", "short answer delay p50 ms (words)",
                        "all turns delay p50 ms (words)"], delay_sweep),
    ])
    command = "python -m benchmarks.bench_turns" + (" --quick" if quick else "")
    if tuple(seeds) != SEEDS:
        command += " --seeds " + " ".join(map(str, seeds))
    if decode_ms is not None:
        command += f" --decode-ms {decode_ms:g}"
    data = {"results": results, "interrupt_sweep": interrupt_sweep, "delay_sweep": delay_sweep,
            "onset_sweep": onset_sweep, "per_condition": per_condition}
    write_section("turns", "Turn taking: end of turn, interruptions, barge-in reaction", body,
                  command, data)
    print(markdown_table(SUMMARY_HEADERS, _summary_rows(results)))
    print(markdown_table(per_condition_headers, per_condition))
    return data


def _defaults_line(options: TurnOptions) -> str:
    fields = ("min_delay_ms", "max_delay_ms", "interrupt_min_ms", "interrupt_min_words",
              "interrupt_sure_ms", "interrupt_voicing", "resume_after_ms", "onset_margin_db",
              "onset_ms", "command_wait_ms")
    return ", ".join(f"{name}: {getattr(options, name)}" for name in fields)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus, two conditions")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="corpus seeds: the first is scored in full, the others rerun the "
                             "defaults (default: %(default)s)")
    parser.add_argument("--decode-ms", type=float, default=None,
                        help="words come this long after a decode is asked for (default: as "
                             "long as it took; use on a machine shared with other jobs)")
    args = parser.parse_args()
    main(args.quick, tuple(args.seeds), args.decode_ms)
