"""The ``transcriber`` section of a local Realtime server script.

A script that names a transcriber has the caller's audio recognised
offline, so ``match`` steps branch on what was really said::

    transcriber:
      type: pocketsphinx
      sentences_from: orderline.asr:SENTENCES   # a list, or a function returning one
      sentences: ["can i pay by card"]          # more, written inline
      vocabulary: [calzone]                     # words said on their own
      expectations:                             # a model of its own per expectation
        phone: orderline.asr:PHONE_SENTENCES    # (a reference, or the sentences inline)
        address: orderline.asr:ADDRESS_SENTENCES

A dialogue state that says ``expect: phone`` has the caller's next turn
decoded with the ``phone`` model (see docs/asr.md).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import msgspec

from pipeflow.errors import ConfigError
from pipeflow.registry import import_ref, importable

__all__ = ["TranscriberOptions", "build_transcriber"]


class TranscriberOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Offline recognition of the caller's audio (see docs/asr.md)."""

    type: Literal["pocketsphinx"] = "pocketsphinx"
    """The recogniser: pocketsphinx with a language model built from the sentences."""
    sentences_from: str = ""
    """``package.module:NAME`` of a list of caller sentences, or of a function
    that returns one (e.g. ``orderline.asr:SENTENCES``); a module that is not
    on the Python path is looked for in the script's folder and its parent."""
    sentences: tuple[str, ...] = ()
    """More caller sentences, written in the script."""
    vocabulary: tuple[str, ...] = ()
    """Words the caller may say on their own (each one becomes a sentence)."""
    sample_rate: Literal[16000] = 16000
    """Rate the recogniser decodes at (its acoustic model's)."""
    expectations: dict[str, str | list[str]] = {}
    """Expectation name -> the sentences callers say when it is expected: a
    ``module:NAME`` reference like ``sentences_from``, or a list. Each gets a
    language model of its own, used when the dialogue expects that name."""

    def __hash__(self) -> int:
        # Frozen, but the expectations are a dict: hashed by content, so the
        # options can key a cache of transcribers (one per section).
        return hash(msgspec.json.encode(self))


def build_transcriber(options: TranscriberOptions, where: str = "script") -> object:
    """The transcriber a script's ``transcriber`` section describes (built once per options).

    Args:
        options: the section.
        where: the script file, for error messages.

    Raises:
        ConfigError: ``sentences_from`` or an expectation does not name a list
            of strings (or a function returning one), or no sentence can be used.
        LocalError: pocketsphinx is missing or cannot load its models.
    """
    return _build(msgspec.json.encode(options), where)


@functools.lru_cache(maxsize=8)
def _build(encoded: bytes, where: str) -> object:
    from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber

    options = msgspec.json.decode(encoded, type=TranscriberOptions)
    sentences = list(options.sentences)
    if options.sentences_from:
        sentences += _sentences_from(options.sentences_from, where)
    if not sentences and not options.vocabulary:
        raise ConfigError("a transcriber needs 'sentences_from', 'sentences' or 'vocabulary': "
                          "the words callers say", f"{where}: transcriber")
    expectations = {}
    for name, given in options.expectations.items():
        found = _sentences_from(given, where) if isinstance(given, str) else list(given)
        if not found:
            raise ConfigError(f"the expectation {name!r} has no sentences",
                              f"{where}: transcriber.expectations")
        expectations[name] = found
    return PocketsphinxTranscriber(options.vocabulary, sentences, options.sample_rate,
                                   expectations=expectations)


def _sentences_from(ref: str, where: str) -> list[str]:
    """Import the sentences; a module not found is looked for next to the script too."""
    try:
        found = import_ref(ref, "sentence list")
    except ConfigError:
        script = Path(where)
        if not script.is_file():
            raise
        folder = script.resolve().parent
        # Like a pipeline file's folder: importable for the import only.
        with importable(str(folder.parent)), importable(str(folder)):
            found = import_ref(ref, "sentence list")
    if callable(found):
        found = found()
    if not isinstance(found, list | tuple) or not all(isinstance(s, str) for s in found):
        raise ConfigError(f"'sentences_from: {ref}' must name a list of strings (or a function "
                          f"returning one), got {type(found).__name__}", f"{where}: transcriber")
    return list(found)
