"""Offline speech recognition: small domain language models for pocketsphinx.

``PocketsphinxTranscriber`` turns a caller's audio into words with the
English acoustic model shipped by the ``pocketsphinx`` package and a
language model built from the sentences of one domain (``corpus``), so a
scripted local Realtime server can branch on what was heard.
"""

from pipeflow.asr.corpus import expand, normalize, number_words, order_sentences
from pipeflow.asr.pocketsphinx import PocketsphinxTranscriber, word_error_rate

__all__ = [
    "PocketsphinxTranscriber",
    "expand",
    "normalize",
    "number_words",
    "order_sentences",
    "word_error_rate",
]
