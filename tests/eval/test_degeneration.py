"""is_loop on hand-written answers (loops and normal answers), LoopInfo fields counted by hand, each threshold at
its boundary, and the XOR run finder against a pairwise loop."""

import random

import pytest
from panacea.eval import degeneration
from panacea.eval.degeneration import (
    MAX_UNIT_WORDS,
    MIN_COVERAGE,
    MIN_REPEATS,
    MIN_RUN_WORDS,
    LoopInfo,
    is_loop,
    loop_rate,
    repetition,
    words,
)

PARAGRAPH = (
    "Here are a few ideas for a quiet weekend. You could take a walk in a nearby park, read a book you have been "
    "meaning to finish, or cook a new recipe with a friend."
)

LOOPS = {
    "sentence_repeated_to_the_end": "Thank you for your question. " * 8 + "Thank you for",
    "short_phrase_many_times": "I'm not here to judge you. I'm not." + "\n\nI'm not." * 8,
    "single_word": "This is very " + "very " * 20,
    "two_sentence_cycle": "I like the park. The park is green. " * 4 + "I like the",
    "loop_after_a_normal_paragraph": PARAGRAPH + "\n\n" + "It is a good idea to rest. " * 5 + "It is a",
    "varying_whitespace_and_newlines": (
        "I don't know.\nI don't know.  I don't know.\n\n\nI  don't   know.\n\tI don't know.\r\nI don't know."
    ),
    "case_and_curly_apostrophes_vary": "I\u2019m not sure. i'm not sure. I\u2019M NOT SURE. I'm Not Sure. " * 2,
    "bold_phrase_repeated": "**I'm not.**\n\n" * 6,
    "list_item_repeated_to_the_end": "Some good fruits are:\n- Apples\n- Pears\n" + "- Plums\n" * 8,
}

NOT_LOOPS = {
    "numbered_list": "Here is your list:\n1. Buy milk\n2. Buy eggs\n3. Buy bread\n4. Buy apples\n5. Buy rice",
    "list_with_shared_openings": (
        "- Use a soft brush.\n- Use a damp cloth.\n- Use a dry towel.\n- Use a gentle soap.\n- Use a clean bucket."
    ),
    "list_items_differing_in_one_word": "- Use a red pen.\n- Use a blue pen.\n- Use a green pen.\n- Use a black pen.",
    "poem_with_a_chorus_twice": (
        "The morning light is soft and slow,\nThe river hums a tune below.\n\n"
        "Sing with me, the day is new,\nThe sky is wide, the sky is blue.\n\n"
        "The evening brings a gentle breeze,\nIt whispers softly through the trees.\n\n"
        "Sing with me, the day is new,\nThe sky is wide, the sky is blue."
    ),
    "chorus_sung_twice_in_a_row": (
        "The river hums a tune below.\n\n" + "Sing with me, the day is new,\nThe sky is blue.\n" * 2
    ),
    "code_with_closing_braces": (
        "function sign(x) {\n  if (x > 0) {\n    if (x > 100) {\n      if (x > 1000) {\n        return 3;\n"
        "      }\n      return 2;\n    }\n    return 1;\n  }\n  return 0;\n}\n}\n}\n}\n}"
    ),
    "code_with_repeated_returns": (
        "def check(a, b, c):\n    if a is None:\n        return None\n    if b is None:\n        return None\n"
        "    if c is None:\n        return None\n    return a + b + c"
    ),
    "html_with_nested_closing_tags": "<div><div><div><div><p>Hello</p></div></div></div></div>",
    "regular_expression": r"Use this pattern: ^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$",
    "short_answer_no_no": "No. No.",
    "emphasis": "I am very very very happy with it. No, no, no, no! Ha ha ha.",
    "markdown_table": (
        "| Shop | Mon | Tue | Wed | Thu | Fri | Sat | Sun |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| Open | Yes | Yes | Yes | Yes | Yes | Yes | Yes |"
    ),
    "cheer_three_times_in_a_long_answer": (
        PARAGRAPH + "\n\nHip hip hooray! Hip hip hooray! Hip hip hooray!\n\nWhatever you choose, leave some time "
        "to rest, and try to get to bed early on Sunday so that the week starts well."
    ),
    "normal_paragraph": PARAGRAPH,
    "empty": "",
    "whitespace_only": " \n\t ",
}


@pytest.mark.parametrize("text", LOOPS.values(), ids=LOOPS.keys())
def test_loops_are_flagged(text):
    assert is_loop(text), repetition(text)


@pytest.mark.parametrize("text", NOT_LOOPS.values(), ids=NOT_LOOPS.keys())
def test_normal_answers_are_not_flagged(text):
    assert not is_loop(text), repetition(text)


# Counted by hand from `words(text)`; the comments give the words and their indices.
HAND_COUNTED = {
    # i'm not here to judge you | . (i'm not .) x 4: 19 words; the run with period 3 starts at the '.' (6) that ends
    # the first sentence, 13 words, four whole copies; the unit is shown from its first clause end.
    "phrase_after_a_sentence": (
        "I'm not here to judge you. I'm not.\n\nI'm not.\n\nI'm not.\n\nI'm not.",
        LoopInfo("i'm not .", 4, 13 / 19, 6, 19, True),
    ),
    # fine | . (yes ; go on .) x 3: 17 words; the run with period 5 starts at the '.' (1), 16 words. Its first
    # copy '. yes ; go on' is shown from its first clause end (not from the ';', the last one).
    "unit_shown_from_its_first_clause_end": (
        "Fine. Yes; go on. Yes; go on. Yes; go on.",
        LoopInfo("yes ; go on .", 3, 16 / 17, 1, 17, True),
    ),
    # it is | very x 10: 12 words.
    "single_word": (
        "It is very very very very very very very very very very",
        LoopInfo("very", 10, 10 / 12, 2, 12, True),
    ),
    # (rest is good . water helps .) x 3 + rest is: 7 * 3 + 2 = 23 words, all in the run, cut inside a copy.
    "two_sentence_cycle_cut": (
        "Rest is good. Water helps. " * 3 + "Rest is",
        LoopInfo("rest is good . water helps .", 3, 1.0, 0, 23, True),
    ),
    # (no .) x 2: a run, but two copies are not a loop.
    "no_no": ("No. No.", LoopInfo("no .", 2, 1.0, 0, 4, False)),
    "nothing_repeats": ("Hello there, friend.", LoopInfo("", 0, 0.0, 0, 0, False)),
}


@pytest.mark.parametrize("text, expected", HAND_COUNTED.values(), ids=HAND_COUNTED.keys())
def test_loop_info_fields_match_a_hand_count(text, expected):
    assert repetition(text) == expected


def test_words_lower_case_straighten_apostrophes_and_split_off_punctuation():
    assert words("  I\u2019M  Not\n\n here.  Don't-stop!\t(x_1)") == [
        "i'm", "not", "here", ".", "don't", "-", "stop", "!", "(", "x_1", ")",
    ]  # fmt: skip


SENTENCE = "The weather today is calm and mild. "  # 8 words


def test_min_repeats_boundary():
    assert not is_loop(SENTENCE * (MIN_REPEATS - 1))
    assert is_loop(SENTENCE * MIN_REPEATS)


def test_min_run_words_boundary():
    assert repetition("very " * (MIN_RUN_WORDS - 1)).repeats == MIN_RUN_WORDS - 1 >= MIN_REPEATS
    assert not is_loop("very " * (MIN_RUN_WORDS - 1))
    assert is_loop("very " * MIN_RUN_WORDS)


def test_min_coverage_boundary():
    run = 8 * MIN_REPEATS  # words in SENTENCE * MIN_REPEATS
    most_padding = round(run / MIN_COVERAGE) - run  # run / (run + padding) >= MIN_COVERAGE
    for padding, loop in ((most_padding, True), (most_padding + 1, False)):
        text = " ".join(f"word{i}" for i in range(padding)) + " " + SENTENCE * MIN_REPEATS
        info = repetition(text)
        assert (info.end - info.start, info.coverage, info.loop) == (run, run / (run + padding), loop)


def test_max_unit_words_boundary():
    def unit(n):
        return " ".join(f"word{i}" for i in range(n)) + " "

    assert is_loop(unit(MAX_UNIT_WORDS) * MIN_REPEATS)
    assert repetition(unit(MAX_UNIT_WORDS + 1) * MIN_REPEATS).repeats == 0  # no shorter unit repeats


def test_a_text_with_many_distinct_words_is_searched_with_wider_codes():
    opening = " ".join(f"word{i}" for i in range(300)) + "."  # 301 words, more than one byte of codes
    info = repetition(opening + " The end is near." * 80)
    assert info == LoopInfo("the end is near .", 80, 401 / 701, 300, 701, True)  # the run starts at the '.' (300)


def _periodic_runs_by_pairs(tokens):
    """The reference: compare each word with the word n later, one pair at a time."""
    runs = []
    for n in range(1, min(MAX_UNIT_WORDS, len(tokens) // 2) + 1):
        same = [tokens[i] == tokens[i + n] for i in range(len(tokens) - n)] + [False]
        start = None
        for i, equal in enumerate(same):
            if equal and start is None:
                start = i
            elif not equal and start is not None:
                if i - start >= n:
                    runs.append((n, start, i + n))
                start = None
    return runs


@pytest.mark.parametrize("distinct", [3, 300], ids=["one_byte_codes", "four_byte_codes"])
def test_periodic_runs_match_a_pairwise_loop(distinct):
    rng = random.Random(distinct)
    for _ in range(20):
        tokens = [f"w{i}" for i in range(distinct)] if distinct > 256 else []
        while len(tokens) < 400:
            chunk = [rng.choice("abc") for _ in range(rng.randint(1, 12))]
            tokens += chunk * rng.randint(1, 5)
        assert list(degeneration._periodic_runs(tokens)) == _periodic_runs_by_pairs(tokens)


def test_loop_rate_is_the_fraction_of_loops():
    assert loop_rate(["very " * 20, "Hello.", "No. No.", "I'm not. " * 10]) == 0.5
    assert loop_rate(text for text in ["very " * 20]) == 1.0
    with pytest.raises(ValueError, match="at least one text"):
        loop_rate([])
