"""Micro-benchmarks: encoding and decoding frames (JSON and msgpack).

Every frame is a msgspec Struct in one tagged union, so recordings, logs,
replays and the wire encode it with no code of their own. This measures
what that costs per frame against the stdlib doing the same job by hand
(``json`` with the audio as base64 text), for a 20 ms audio frame and a
small event frame, in alternating rounds of one run (medians).

Resample and VAD costs live in ``bench_audio``; Realtime event codecs in
``bench_realtime``.

    python -m benchmarks.bench_micro [--quick]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from benchmarks.report import markdown_table, write_section
from pipeflow.frames import (
    AudioFrame,
    Transcript,
    decode_json,
    decode_msgpack,
    encode_json,
    encode_msgpack,
)

AUDIO = AudioFrame(pcm=bytes(range(256)) * 2 + bytes(128), sample_rate=16000, pts=1.25)
EVENT = Transcript(role="user", text="Two large pizzas and a salad, please.", item_id="item_42")


def _stdlib_audio_encode(frame: AudioFrame) -> bytes:
    return json.dumps({
        "type": "audio", "pcm": base64.b64encode(frame.pcm).decode(),
        "sample_rate": frame.sample_rate, "channels": frame.channels, "pts": frame.pts,
        "item_id": frame.item_id,
    }).encode()


def _stdlib_audio_decode(data: bytes) -> AudioFrame:
    raw = json.loads(data)
    return AudioFrame(pcm=base64.b64decode(raw["pcm"]), sample_rate=raw["sample_rate"],
                      channels=raw["channels"], pts=raw["pts"], item_id=raw["item_id"])


def _stdlib_event_encode(frame: Transcript) -> bytes:
    return json.dumps({"type": "transcript", "role": frame.role, "text": frame.text,
                       "final": frame.final, "item_id": frame.item_id}).encode()


def _stdlib_event_decode(data: bytes) -> Transcript:
    raw = json.loads(data)
    return Transcript(role=raw["role"], text=raw["text"], final=raw["final"],
                      item_id=raw["item_id"])


def cases() -> list[tuple[str, dict[str, Callable[[], Any]]]]:
    """(operation, {implementation: zero-argument callable}) to time side by side."""
    audio_json, audio_pack = encode_json(AUDIO), encode_msgpack(AUDIO)
    event_json, event_pack = encode_json(EVENT), encode_msgpack(EVENT)
    audio_std, event_std = _stdlib_audio_encode(AUDIO), _stdlib_event_encode(EVENT)
    # Sanity: every path round-trips to the same frame.
    for decoded in (decode_json(audio_json), decode_msgpack(audio_pack),
                    _stdlib_audio_decode(audio_std)):
        if decoded != AUDIO:
            raise RuntimeError(f"audio frame did not round-trip: {decoded!r}")
    for decoded_event in (decode_json(event_json), decode_msgpack(event_pack),
                          _stdlib_event_decode(event_std)):
        if decoded_event != EVENT:
            raise RuntimeError(f"event frame did not round-trip: {decoded_event!r}")
    return [
        ("encode 20 ms audio frame", {
            "msgspec JSON": lambda: encode_json(AUDIO),
            "msgspec msgpack": lambda: encode_msgpack(AUDIO),
            "stdlib json + base64": lambda: _stdlib_audio_encode(AUDIO),
        }),
        ("decode 20 ms audio frame", {
            "msgspec JSON": lambda: decode_json(audio_json),
            "msgspec msgpack": lambda: decode_msgpack(audio_pack),
            "stdlib json + base64": lambda: _stdlib_audio_decode(audio_std),
        }),
        ("encode transcript frame", {
            "msgspec JSON": lambda: encode_json(EVENT),
            "msgspec msgpack": lambda: encode_msgpack(EVENT),
            "stdlib json": lambda: _stdlib_event_encode(EVENT),
        }),
        ("decode transcript frame", {
            "msgspec JSON": lambda: decode_json(event_json),
            "msgspec msgpack": lambda: decode_msgpack(event_pack),
            "stdlib json": lambda: _stdlib_event_decode(event_std),
        }),
    ]


def measure(number: int, rounds: int) -> list[dict[str, Any]]:
    """Median µs per call of each implementation, rounds alternating between them."""
    out = []
    for operation, impls in cases():
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            for name, fn in impls.items():
                times[name].append(timeit.timeit(fn, number=number) / number * 1e6)
        medians = {name: statistics.median(values) for name, values in times.items()}
        out.append({"operation": operation, "us": medians})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    number, rounds = (2_000, 3) if args.quick else (50_000, 7)
    results = measure(number, rounds)
    rows = []
    for result in results:
        us = result["us"]
        stdlib = next(v for k, v in us.items() if k.startswith("stdlib"))
        for name, value in us.items():
            rows.append([result["operation"], name, value,
                         "1.00x" if name.startswith("stdlib") else f"{stdlib / value:.1f}x"])
    table = markdown_table(["operation", "implementation", "µs per frame", "speed-up vs stdlib"],
                           rows)
    body = (
        f"{number:,} calls per round, {rounds} alternating rounds, medians. The stdlib column "
        "does the same job by hand (a dict, base64 for the PCM, json.dumps/loads, the frame "
        "rebuilt); every path is checked to round-trip to an equal frame.\n\n" + table
    )
    command = "python -m benchmarks.bench_micro" + (" --quick" if args.quick else "")
    write_section("micro", "Micro-benchmarks: frame encoding", body, command, results)
    print(table)


if __name__ == "__main__":
    main()
