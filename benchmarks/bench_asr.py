"""Offline speech recognition: word accuracy and speed of the pocketsphinx transcriber.

Scores ``PocketsphinxTranscriber`` with the order line's language model on
espeak-ng speech: the test recordings (``pipelines.orderline.asr.UTTERANCES``,
which the settings were tuned on) and a held-out set phrased differently,
each at 24 kHz (what the Realtime API carries) and as phone audio (8 kHz,
mu-law round trip). Word accuracy is 1 - word error rate; the real-time
factor is decoding time over audio time on one core.

Spoken phone numbers are scored apart: seeded random ten-digit numbers,
said in 3-3-4 groups (some with "oh", "double", "triple"), decoded with the
order line's default model and with its digits model (what the script
listens with after asking for a number), per digit and per whole number.

    python -m benchmarks.bench_asr [--quick] [--numbers N]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from typing import Any

from benchmarks.report import markdown_table, write_section
from pipeflow.asr.corpus import normalize, spoken_digits
from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber, word_error_rate
from pipeflow.audio import g711, tts
from pipeflow.realtime.captures import CaptureError, digits_from_words
from pipelines.orderline.asr import PHONE_SENTENCES, SENTENCES, UTTERANCES, Utterance

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


_DIGIT_WORDS = frozenset(("zero", "oh", "one", "two", "three", "four", "five", "six", "seven",
                          "eight", "nine", "double", "triple"))


def spoken_numbers(count: int, seed: int = 1) -> list[tuple[str, str]]:
    """(digits, what the caller says) for ``count`` random ten-digit numbers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        digits = "".join(str(rng.randrange(10)) for _ in range(10))
        style = (0, 1, 1, 2)[i % 4]
        groups = [spoken_digits(digits[a:b], style) for a, b in ((0, 3), (3, 6), (6, 10))]
        lead = ("", "My number is ", "It's ", "")[i % 4]
        out.append((digits, lead + ", ".join(groups) + "."))
    return out


def heard_digits(words: str) -> str:
    """The digits in a transcript's digit words (other words dropped), "" for none."""
    kept = " ".join(w for w in words.split() if w in _DIGIT_WORDS)
    try:
        return digits_from_words(kept) if kept else ""
    except CaptureError:
        return ""


def _edits(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def score_digits(asr: PocketsphinxTranscriber, numbers: list[tuple[str, str]], rate: int,
                 expect: str | None) -> dict[str, Any]:
    """Digit accuracy (1 - digit edits per digit said) and whole numbers heard exactly."""
    edits = exact = 0
    misses = []
    for digits, text in numbers:
        heard = asr.transcribe(_audio(text, rate), rate, expect=expect)
        got = heard_digits(heard)
        edits += min(_edits(digits, got), len(digits))
        exact += got == digits
        if got != digits and len(misses) < 3:
            misses.append(f"{text} -> {heard}")
    said = sum(len(d) for d, _ in numbers)
    return {"digit_accuracy": 1 - edits / said, "exact": exact, "numbers": len(numbers),
            "misses": misses}


def digits_section(count: int) -> tuple[str, dict[str, Any]]:
    """The phone-number table (markdown) and its figures."""
    with tempfile.TemporaryDirectory() as cache:
        asr = PocketsphinxTranscriber(sentences=SENTENCES, cache_dir=cache,
                                      expectations={"digits": PHONE_SENTENCES})
        numbers = spoken_numbers(count)
        results = {f"{model}, {band}": score_digits(asr, numbers, rate, expect)
                   for model, expect in (("default model", None), ("digits model", "digits"))
                   for band, rate in (("16 kHz", 16000), ("8 kHz mu-law", 8000))}
    table = markdown_table(
        ["model, audio", "numbers", "digit accuracy", "whole numbers right"],
        [[name, r["numbers"], f"{r['digit_accuracy']:.1%}",
          f"{r['exact']}/{r['numbers']} ({r['exact'] / r['numbers']:.0%})"]
         for name, r in results.items()])
    return table, results


def main(quick: bool, numbers: int = 40) -> None:
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
    count = min(numbers, 12) if quick else numbers
    digit_table, digit_results = digits_section(count)
    body += ("\n\n**Spoken phone numbers** (seeded random ten-digit numbers, 3-3-4 groups; "
             "per digit: 1 - digit edits per digit said)\n\n" + digit_table)
    command = "python -m benchmarks.bench_asr" + (" --quick" if quick else "")
    if numbers != 40:
        command += f" --numbers {numbers}"
    figures: dict[str, Any] = {name: dict(r) for name, r in results.items()}
    figures["phone numbers"] = digit_results
    write_section("asr", "Offline speech recognition (pocketsphinx, order line)", body, command,
                  figures)
    print(summary)
    print(digit_table)
    for name, r in digit_results.items():
        for miss in r["misses"]:
            print(f"  {name}: {miss}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer recordings")
    parser.add_argument("--numbers", type=int, default=40, help="phone numbers spoken")
    args = parser.parse_args()
    main(args.quick, args.numbers)
