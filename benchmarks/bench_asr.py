"""Offline speech recognition: word accuracy and speed of the pocketsphinx transcriber.

Scores ``PocketsphinxTranscriber`` with the order line's language model on
espeak-ng speech: the test recordings (``pipelines.orderline.asr.UTTERANCES``,
which the settings were tuned on) and a held-out set phrased differently,
each at 24 kHz (what the Realtime API carries) and as phone audio (8 kHz,
mu-law round trip). Word accuracy is 1 - word error rate; the real-time
factor is decoding time over audio time on one core.

    python -m benchmarks.bench_asr [--quick]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from typing import Any

from benchmarks.report import markdown_table, write_section
from pipeflow.asr.corpus import normalize
from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber, word_error_rate
from pipeflow.audio import g711, tts
from pipelines.orderline.asr import SENTENCES, UTTERANCES, Utterance

HELD_OUT = (
    Utterance("Hello, how much are the salads?", "salads"),
    Utterance("Could I have three pizzas, please?", "three", "pizzas"),
    Utterance("I'll take two salads and an ice cream.", "two", "salads", "ice", "cream"),
    Utterance("Yeah, that's right.", "yeah"),
    Utterance("Nope, nothing else.", "nope"),
    Utterance("My number is five five five, two four six, eight one three five.", "number"),
    Utterance("It's 7 Park Road, Franklin.", "road"),
    Utterance("Remove the pizza, please.", "pizza"),
)
"""Sentences not used to tune the settings."""

BANDS = (("24 kHz", 24000), ("8 kHz mu-law", 8000))


def _audio(text: str, rate: int) -> bytes:
    pcm = tts.synthesize(text, rate).tobytes()
    return g711.ulaw_decode(g711.ulaw_encode(pcm)) if rate == 8000 else pcm


def score(asr: PocketsphinxTranscriber, utterances: tuple[Utterance, ...],
          rate: int) -> dict[str, Any]:
    """Per-utterance transcripts and errors, totals, slot words heard and real-time factor."""
    rows, errors, words, slots, heard_slots, busy, spoken = [], 0.0, 0, 0, 0, 0.0, 0.0
    for u in utterances:
        pcm = _audio(u.text, rate)
        started = time.perf_counter()
        heard = asr.transcribe(pcm, rate)
        busy += time.perf_counter() - started
        spoken += len(pcm) / 2 / rate
        n = len(normalize(u.text).split())
        wer = word_error_rate(u.text, heard)
        found = sum(bool(re.search(rf"\b(?:{s})\b", heard)) for s in u.slots)
        errors, words = errors + wer * n, words + n
        slots, heard_slots = slots + len(u.slots), heard_slots + found
        rows.append({"text": u.text, "heard": heard, "wer": wer,
                     "slots": f"{found}/{len(u.slots)}"})
    return {"rows": rows, "wer": errors / words, "words": words, "slots": slots,
            "slots_heard": heard_slots, "rtf": busy / spoken}


def main(quick: bool) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        asr = PocketsphinxTranscriber(sentences=SENTENCES, cache_dir=cache)
        build_s = time.perf_counter() - started
        sets = {"test": UTTERANCES[:6] if quick else UTTERANCES,
                "held-out": HELD_OUT[:3] if quick else HELD_OUT}
        results = {f"{name}, {band}": score(asr, utterances, rate)
                   for name, utterances in sets.items() for band, rate in BANDS}
    summary = markdown_table(
        ["recordings", "words", "word accuracy", "WER", "slot words heard", "real-time factor"],
        [[name, r["words"], f"{1 - r['wer']:.1%}", f"{r['wer']:.1%}",
          f"{r['slots_heard']}/{r['slots']}", f"{r['rtf']:.3f}"] for name, r in results.items()],
    )
    detail = []
    for name, r in results.items():
        detail.append(f"\n**{name}**\n\n" + markdown_table(
            ["said", "heard", "WER", "slots"],
            [[row["text"], row["heard"], f"{row['wer']:.0%}", row["slots"]] for row in r["rows"]],
        ))
    body = (
        f"Order-line language model: {len(SENTENCES)} sentences, built in {build_s:.1f} s "
        "(first use; cached after). espeak-ng voice en-us, 175 words per minute.\n\n"
        + summary + "\n" + "\n".join(detail)
    )
    command = "python -m benchmarks.bench_asr" + (" --quick" if quick else "")
    write_section("asr", "Offline speech recognition (pocketsphinx, order line)", body, command,
                  {name: {k: v for k, v in r.items()} for name, r in results.items()})
    print(summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer recordings")
    main(parser.parse_args().quick)
