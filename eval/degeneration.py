"""Degeneration by repetition: is a generated answer caught in a loop? (no model, no dependency; ours)

Greedy decoding of a small model loops: after DPO, SmolLM2-135M answers "I'm not here to judge. I'm not.\\n\\nI'm
not.\\n\\nI'm not. ..." or repeats one sentence until `max_new_tokens` runs out. Such a loop is a run of
consecutive copies of one unit of words; as the answer is cut at the token budget, it usually reaches the end of
the text, cut inside a copy. `repetition` finds the longest run and `is_loop` decides; `loop_rate` is the measure.

**Words** (`words`): lower case, curly apostrophes made straight; a word is letters, digits, `_` and inner
apostrophes ("i'm"); every other visible character is a word of its own; whitespace only separates, so newlines
and indentation do not matter. A **run** with unit length n is a maximal stretch of words in which each word
equals the word n later, two or more units long; its **repeats** are the whole units it spans, its **coverage**
its share of the text's words. An answer is a loop when a run, with n from 1 to `MAX_UNIT_WORDS`, has

- `MIN_REPEATS` = 3 or more repeats. Twice is ordinary: a chorus sung twice, "No. No.", a refrain. Three
  consecutive copies of one sentence are rare in written answers, and a greedy decoder that has written a unit
  three times seldom leaves it: the probability of repeating a sentence grows with the copies already in the
  context (the self-reinforcement of Xu et al., "Learning to Break the Loop", NeurIPS 2022).
- `MIN_RUN_WORDS` = 10 or more words, so that a short unit needs more copies: "very very very", "no, no, no, no"
  and "ha ha ha" are emphasis; "very" ten times or "I'm not." four times (12 words) are a loop.
- `MIN_COVERAGE` = 0.2 or more: a fifth of the answer. A loop that starts late in a 96-token answer (about 85
  words) still reaches it ("I'm not." six times); a line repeated three times inside a long, otherwise normal
  answer does not (a cheer three times in an 80-word answer, "hallelujah" five times in a song).

`MAX_UNIT_WORDS` = 40 words: one or two sentences with their punctuation, the units these loops cycle through;
three copies of 40 words are 120 words, over half of a 256-token answer. Two rules of ours keep non-prose out:
a unit holding `|` (a Markdown table row: cells of one value repeat) or `<` (an HTML tag: nested `</div>`s)
is skipped, and so is a unit without a word of two or more letters (code's `}` and `)`, `---`, `\\d{1,3}\\.` in a
regular expression, rows of zeros, letter art). A list forms no run unless its items repeat: a word that differs
between items breaks it. The run may begin inside a copy (". i'm not . i'm not ." after a sentence); the unit is
shown from its first clause end (`.`, `!`, `?`, `;`, `:`) when it does not end at one.

Checked (2026-12-04) on the 17,015 answers, chosen and rejected (distinct within a file), of
`data/{helpful,concise,harmless,xstest}.jsonl.gz`: `is_loop` flags 7, six of them rejected answers, and each, read,
is a loop (a list item, a template, two lines of a poem or a file name repeated 3 to 134 times; a cycle of nonsense
words). None of the docs' quoted generations is one: the loop quoted in docs/steering.md shows two copies before
its ellipsis. Cost: one big-integer XOR per unit length; a 300-word answer takes 0.14-0.3 ms on a loaded 2-core
machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

MIN_REPEATS = 3  # whole copies of the unit in the run
MIN_RUN_WORDS = 10  # words in the run
MIN_COVERAGE = 0.2  # share of the answer's words in the run
MAX_UNIT_WORDS = 40  # longest unit looked for

_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_TWO_LETTERS = re.compile(r"[^\W\d_].*[^\W\d_]")  # "no", "i'm", "td"; not "d", "o", "42"
_CLAUSE_ENDS = frozenset(".!?;:")
_MARKUP = frozenset("|<")  # a Markdown table row, an HTML tag
_STRAIGHT = str.maketrans(dict.fromkeys("\u2018\u2019\u201b\u02bc\u2032", "'"))
_ONE_IF_NONZERO = bytes([0] + [1] * 255)  # a bytes.translate table


class LoopInfo(NamedTuple):
    """The run of repeated words that decides `is_loop` (see `repetition`); unit "" when nothing repeats."""

    unit: str  # the repeated words, joined by single spaces ("i'm not .")
    repeats: int  # whole copies of the unit in the run
    coverage: float  # words in the run / words in the text
    start: int  # the run is words(text)[start:end]; it may begin inside a copy of the unit
    end: int
    loop: bool  # what `is_loop` answers


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of `text`, in order; whitespace only separates them."""
    return _WORD.findall(text.translate(_STRAIGHT).lower())


def repetition(text: str) -> LoopInfo:
    """The run that decides `is_loop`: the longest run of `MIN_REPEATS` or more copies of a unit if there is one,
    else the longest run of two copies; ties go to the shorter unit."""
    tokens = words(text)
    best, best_key = LoopInfo("", 0, 0.0, 0, 0, False), (False, 0, 0)
    for n, start, end in _periodic_runs(tokens):
        repeats = (end - start) // n
        key = (repeats >= MIN_REPEATS, end - start, -n)
        if key <= best_key:
            continue
        unit = tokens[start : start + n]
        if _MARKUP.intersection(unit) or not any(_TWO_LETTERS.search(word) for word in unit):
            continue  # not prose: markup, or only symbols, numbers and single letters (code, regular expressions)
        if unit[-1] not in _CLAUSE_ENDS:  # show the unit from its first clause end, if it has one
            first = next((i + 1 for i, word in enumerate(unit) if word in _CLAUSE_ENDS), 0)
            unit = unit[first:] + unit[:first]
        coverage = (end - start) / len(tokens)
        loop = key[0] and end - start >= MIN_RUN_WORDS and coverage >= MIN_COVERAGE
        best, best_key = LoopInfo(" ".join(unit), repeats, coverage, start, end, loop), key
    return best


def is_loop(text: str) -> bool:
    """True when `text` holds a run of `MIN_REPEATS`+ copies of one unit of at most `MAX_UNIT_WORDS` words, with
    `MIN_RUN_WORDS`+ words and `MIN_COVERAGE`+ of the text's words."""
    return repetition(text).loop


def loop_rate(texts: Iterable[str]) -> float:
    """The fraction of `texts` that `is_loop` calls loops."""
    verdicts = [is_loop(text) for text in texts]
    if not verdicts:
        raise ValueError("loop_rate needs at least one text, got none.")
    return sum(verdicts) / len(verdicts)


def _periodic_runs(tokens: list[str]) -> Iterator[tuple[int, int, int]]:
    """(n, start, end) for each maximal stretch `tokens[start:end]` that equals itself shifted by n words and holds
    2n or more words (two or more copies of an n-word unit), for n = 1 .. `MAX_UNIT_WORDS`."""
    codes: dict[str, int] = {}
    ids = [codes.setdefault(word, len(codes)) for word in tokens]
    width = 1 if len(codes) <= 256 else 4  # bytes per word
    packed = bytes(ids) if width == 1 else b"".join(code.to_bytes(width, "little") for code in ids)
    for n in range(1, min(MAX_UNIT_WORDS, len(tokens) // 2) + 1):
        # One XOR of two big integers compares every word with the word n later: 7x faster than `map` over pairs.
        shift = width * n
        xor = int.from_bytes(packed[:-shift], "little") ^ int.from_bytes(packed[shift:], "little")
        differs = xor.to_bytes(len(packed) - shift, "little")  # byte k: byte k % width of word k // width
        if width > 1:  # a word differs when any of its bytes does
            any_byte = 0
            for k in range(width):
                any_byte |= int.from_bytes(differs[k::width], "little")
            differs = any_byte.to_bytes(len(tokens) - n, "little")
        differs = differs.translate(_ONE_IF_NONZERO)  # byte i: 0 when word i equals word i + n, else 1
        start = differs.find(bytes(n))  # n equal pairs in a row: two copies of an n-word unit
        while start != -1:
            stop = differs.find(1, start + n)
            stop = len(differs) if stop == -1 else stop
            yield n, start, stop + n
            start = differs.find(bytes(n), stop)
