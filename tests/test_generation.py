"""Grid generation in mixed-preference batches: the same greedy answers as one λ at a time, and as one prompt alone."""

import pytest
import torch

from panacea.generation import chat_inputs, generate_grid, generate_text
from panacea.preferences import simplex_grid
from tests.conftest import panacea_llama, tiny_tokenizer
from tests.helpers import tiny_soup

PROMPTS = ["w5 w9 w11", "w7", "w20 w21 w22 w23 w24", "w30 w31"]  # different lengths: rows are left-padded


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return panacea_llama(), tiny_tokenizer()


def test_mixed_batches_give_the_answers_of_one_preference_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    grid = simplex_grid(2, 5)
    mixed = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=6, batch_size=8)
    one_at_a_time = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=6, batch_size=8, mixed=False)
    assert mixed == one_at_a_time
    assert len(mixed) == len(grid) and all(len(answers) == len(PROMPTS) for answers in mixed)


def test_a_rewarded_soup_answers_a_grid_one_preference_at_a_time():
    """generate_grid takes a SoupModel, but mixed batches (the default) gave it several λ in one call, which a soup
    refuses ("a rewarded soup serves one λ per call"): callers had to pass mixed=False themselves."""
    soup, tokenizer, grid = tiny_soup(), tiny_tokenizer(), simplex_grid(2, 3)
    answers = generate_grid(soup, tokenizer, PROMPTS, grid, max_new_tokens=4, batch_size=8)
    assert answers == generate_grid(soup, tokenizer, PROMPTS, grid, max_new_tokens=4, batch_size=8, mixed=False)
    assert answers[0] != answers[-1]  # each point at its own λ


def test_grid_answers_equal_each_prompt_answered_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    grid = simplex_grid(2, 3)
    answers = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=6, batch_size=4)
    for point, preference in enumerate(grid):
        for index, prompt in enumerate(PROMPTS):
            assert answers[point][index] == generate_text(model, tokenizer, prompt, preference, max_new_tokens=6)


def test_the_preference_changes_the_answers(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    answers = generate_grid(model, tokenizer, PROMPTS, torch.eye(2), max_new_tokens=6)
    assert answers[0] != answers[1]  # the adapter is random and non-trivial: the vertices must differ


def test_a_preference_matrix_of_the_wrong_shape_is_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match=r"non-empty \(points, m\) tensor"):
        generate_grid(model, tokenizer, PROMPTS, torch.tensor([0.5, 0.5]))


def test_a_grid_takes_every_form_of_preference_the_adapter_takes_and_checks_each_row():
    """docs/adapter.md: every call that takes λ takes named mappings too; a list of them failed with AttributeError,
    and a row off the simplex was generated with."""
    model = panacea_llama(preference_names=["helpful", "harmless"])
    tokenizer, grid = tiny_tokenizer(), torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    expected = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=4)
    named = [{"helpful": 1.0, "harmless": 0.0}, {"harmless": 0.75, "helpful": 0.25}]
    assert generate_grid(model, tokenizer, PROMPTS, named, max_new_tokens=4) == expected
    assert generate_grid(model, tokenizer, PROMPTS, grid.tolist(), max_new_tokens=4) == expected
    with pytest.raises(ValueError, match="must sum to 1"):
        generate_grid(model, tokenizer, PROMPTS, [[0.5, 0.6]], max_new_tokens=4)


def test_finished_says_which_answers_ended_on_an_end_token_and_which_were_cut_off(model_and_tokenizer):
    """The answers' own first tokens become the end tokens, so some rows stop early and others run to the cap; each
    row's flag is checked against that row generated alone."""
    model, tokenizer = model_and_tokenizer
    grid = torch.eye(2)
    first = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=6)
    stops = sorted({tokenizer(first[0][0], add_special_tokens=False)["input_ids"][1]})
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stops
    try:
        _, finished = generate_grid(model, tokenizer, PROMPTS, grid, max_new_tokens=6, return_finished=True)
        expected = []
        for preference in grid:
            row = []
            for prompt in PROMPTS:
                inputs = chat_inputs(tokenizer, [prompt])
                output = model.generate(**inputs, preference=preference, max_new_tokens=6, do_sample=False)
                row.append(bool(set(output[0, inputs["input_ids"].shape[1] :].tolist()) & set(stops)))
            expected.append(row)
    finally:
        model.generation_config.eos_token_id = original
    assert finished == expected
    assert {flag for row in finished for flag in row} == {True, False}  # both kinds occur: the test can fail
