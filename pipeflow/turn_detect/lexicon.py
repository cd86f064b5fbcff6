"""Words that say whether a caller is done: fillers and conjunctions hold the turn,
short complete answers end it, backchannels are not a turn at all.

The lists are plain data so a pipeline can replace them (``backchannels`` in
YAML); matching is on lower-case words with punctuation removed.
"""

from __future__ import annotations

import re

__all__ = ["BACKCHANNELS", "COMPLETE", "HOLD", "meaningful_words", "word_signal", "words_of"]

HOLD = frozenset({
    # fillers and conjunctions
    "and", "um", "uh", "er", "erm", "hmm", "so", "like", "but", "or", "because", "then", "also",
    "well", "if", "than",
    # articles, determiners, possessives
    "the", "a", "an", "some", "any", "my", "your", "our", "their", "his", "her", "this", "that",
    "these", "those", "another",
    # prepositions
    "to", "of", "with", "for", "about", "at", "in", "on", "from", "by", "into",
    # pronouns and auxiliaries that need a verb or an object after them
    "i", "i'd", "i'm", "i'll", "we", "we'd", "you", "it's", "is", "are", "was", "were", "be",
    "would", "could", "can", "will", "should", "have", "has", "get", "want", "wanted", "need",
    "take", "maybe",
})
"""Function words after which a caller is rarely done: a pause there is mid-sentence."""

COMPLETE = frozenset({
    "yes", "no", "yeah", "yep", "nope", "sure", "okay", "ok", "right", "correct", "please",
    "thanks", "thank you", "that's all", "that's it", "done", "one", "two", "three",
    "four", "five", "six", "seven", "eight", "nine", "ten", "zero", "none", "nothing",
})
"""Whole short answers (or their last word) that end a turn."""

BACKCHANNELS = (
    "mhmm", "mm hmm", "um hum", "uh hum", "mm", "hmm", "uh huh", "ok", "okay", "yeah", "yes",
    "right", "sure", "i see", "got it", "alright", "yep", "uh", "um",
)
"""What a listener says to show they follow: it does not take the floor."""

_WORD = re.compile(r"[a-z']+")


def words_of(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped."""
    return _WORD.findall(text.lower())


def meaningful_words(text: str, backchannels: tuple[str, ...] = BACKCHANNELS) -> int:
    """How many words of ``text`` carry content: not backchannels (a phrase counts
    whole), not fillers or function words ("and um" says nothing)."""
    words = words_of(text)
    phrases = sorted((words_of(b) for b in backchannels), key=len, reverse=True)
    count, i = 0, 0
    while i < len(words):
        for phrase in phrases:
            if phrase and words[i : i + len(phrase)] == phrase:
                i += len(phrase)
                break
        else:
            count += words[i] not in HOLD
            i += 1
    return count


def word_signal(text: str) -> float:
    """-1 (surely more to come) .. +1 (surely complete) from the words heard so far; 0: no clue."""
    words = words_of(text)
    if not words:
        return 0.0
    if words[-1] in HOLD:
        return -1.0
    if len(words) <= 3:
        whole = " ".join(words)
        if whole in COMPLETE or all(w in COMPLETE for w in words):
            return 1.0
        if words[-1] in COMPLETE or " ".join(words[-2:]) in COMPLETE:
            return 0.6
    return 0.0
