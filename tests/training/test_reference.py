"""Reference log-probs: the base model's values, computed once, cached on disk under a content key."""

import logging
import os

import pytest
import torch
from panacea.training.reference import reference_cache_key, reference_log_probs
from safetensors.torch import save_file

from panacea.data import TokenizedPair
from tests.conftest import panacea_llama, randomize_adapter, tiny_llama

PAD = 0
SETTINGS = {"dtype": "float32", "mixed_precision": "no", "format": 1}

# Lengths out of order, so that batching by length has to put the results back in place.
PAIRS = [
    TokenizedPair("a", prompt_ids=[5, 6, 7, 8], chosen_ids=[9, 10, 11], rejected_ids=[12, 13]),
    TokenizedPair("b", prompt_ids=[14], chosen_ids=[15], rejected_ids=[16, 17]),
    TokenizedPair("c", prompt_ids=[18, 19], chosen_ids=[20, 21, 22, 23, 24], rejected_ids=[25]),
]


def base_log_probs(seed, pairs):
    """Independent reference: a fresh plain base model (same seed), one unpadded row at a time, full logits."""
    model = tiny_llama(seed)
    result = torch.empty(len(pairs), 2)
    with torch.no_grad():
        for index, pair in enumerate(pairs):
            for column, response in enumerate((pair.chosen_ids, pair.rejected_ids)):
                ids = torch.tensor([pair.prompt_ids + response])
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
                targets = ids[0, 1:]
                token_logps = logps[torch.arange(len(targets)), targets][len(pair.prompt_ids) - 1 :]
                result[index, column] = token_logps.sum().float()
    return result


def reference(model, pairs, folder, settings=SETTINGS):
    return reference_log_probs(model, pairs, pad_token_id=PAD, batch_size=2, settings=settings, folder=folder)


class ForwardCounter:
    """Counts forward calls of a model's base model."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.base_model.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.calls += 1


def test_reference_log_probs_are_the_base_models(tmp_path):
    model = panacea_llama(seed=0)
    torch.testing.assert_close(reference(model, PAIRS, tmp_path), base_log_probs(0, PAIRS), rtol=0, atol=1e-5)


def test_reference_log_probs_ignore_the_adapter_and_the_preference(tmp_path):
    model = panacea_llama(seed=0)
    model.set_preference([0.9, 0.1])
    with torch.no_grad():
        adapted = model(input_ids=torch.tensor([[5, 6, 7]])).logits
        plain = tiny_llama(0)(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert (adapted - plain).abs().max() > 1e-3  # the randomized adapter does change the model
    torch.testing.assert_close(reference(model, PAIRS, tmp_path), base_log_probs(0, PAIRS), rtol=0, atol=1e-5)


def test_reference_log_probs_have_one_row_per_pair(tmp_path):
    assert reference(panacea_llama(), PAIRS, tmp_path).shape == (3, 2)


def test_reference_leaves_the_model_in_training_mode_with_the_adapter_on(tmp_path):
    model = panacea_llama().train()
    reference(model, PAIRS, tmp_path)
    assert model.training
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        adapted = model(input_ids=ids, preference=[0.5, 0.5]).logits
        plain = tiny_llama(0)(input_ids=ids).logits
    assert (adapted - plain).abs().max() > 1e-3


def test_first_call_computes_and_writes_the_cache(tmp_path):
    model = panacea_llama()
    counter = ForwardCounter(model)
    reference(model, PAIRS, tmp_path)
    key = reference_cache_key(model, PAIRS, SETTINGS)
    assert counter.calls == 2  # 3 pairs in batches of 2
    assert (tmp_path / f"{key}.safetensors").is_file()


def test_second_call_is_a_cache_hit_that_runs_no_forward(tmp_path):
    model = panacea_llama()
    first = reference(model, PAIRS, tmp_path)
    counter = ForwardCounter(model)
    second = reference(model, PAIRS, tmp_path)
    assert counter.calls == 0
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_the_log_says_whether_the_reference_pass_ran_or_where_it_was_read_from(tmp_path, caplog):
    model = panacea_llama()
    with caplog.at_level(logging.INFO, logger="panacea.training.reference"):
        reference(model, PAIRS, tmp_path)
        reference(model, PAIRS, tmp_path)
    first, second = (record.getMessage() for record in caplog.records)
    assert first.startswith("reference log-probs for 3 pairs: computing once")
    key = reference_cache_key(model, PAIRS, SETTINGS)
    assert second == f"reference log-probs for 3 pairs: read from {tmp_path / f'{key}.safetensors'}"


def test_cache_is_found_by_another_model_object_with_the_same_base(tmp_path):
    reference(panacea_llama(seed=0), PAIRS, tmp_path)
    other = panacea_llama(seed=0)
    counter = ForwardCounter(other)
    reference(other, PAIRS, tmp_path)
    assert counter.calls == 0


def test_a_seed_folder_is_read_when_the_cache_misses_and_never_written(tmp_path, monkeypatch):
    seeds, empty, cache = tmp_path / "seeds", tmp_path / "empty", tmp_path / "cache"
    expected = reference(panacea_llama(seed=0), PAIRS, seeds)  # what a committed folder would hold
    before = sorted(path.name for path in seeds.iterdir())
    monkeypatch.setenv("PANACEA_REFERENCE_LOGPS", f"{empty}{os.pathsep}{seeds}")  # a missing folder is skipped
    model = panacea_llama(seed=0)
    counter = ForwardCounter(model)
    torch.testing.assert_close(reference(model, PAIRS, cache), expected, rtol=0, atol=0)
    assert counter.calls == 0 and not cache.exists()  # read from the seed folder, not copied into the cache
    reference(model, PAIRS[:2], cache)  # other pairs: a miss everywhere, computed into the cache only
    assert counter.calls == 1 and len(list(cache.iterdir())) == 1
    assert sorted(path.name for path in seeds.iterdir()) == before


def test_the_cache_is_read_before_a_seed_folder_and_a_damaged_seed_entry_is_recomputed(tmp_path, monkeypatch):
    seeds, cache = tmp_path / "seeds", tmp_path / "cache"
    model = panacea_llama(seed=0)
    name = f"{reference_cache_key(model, PAIRS, SETTINGS)}.safetensors"
    expected = reference(model, PAIRS, cache)
    seeds.mkdir()
    save_file({"logps": torch.zeros(len(PAIRS), 2)}, seeds / name)  # fits, but is not what the cache holds
    monkeypatch.setenv("PANACEA_REFERENCE_LOGPS", str(seeds))
    torch.testing.assert_close(reference(model, PAIRS, cache), expected, rtol=0, atol=0)  # the cache wins
    (seeds / name).write_bytes(b"not a safetensors file")
    counter = ForwardCounter(model)
    torch.testing.assert_close(reference(model, PAIRS, tmp_path / "fresh"), expected, rtol=0, atol=1e-6)
    assert counter.calls == 2 and (seeds / name).read_bytes() == b"not a safetensors file"  # recomputed, seed untouched


def test_a_seed_entry_for_another_base_model_is_not_used(tmp_path, monkeypatch):
    seeds = tmp_path / "seeds"
    reference(panacea_llama(seed=0), PAIRS, seeds)
    monkeypatch.setenv("PANACEA_REFERENCE_LOGPS", str(seeds))
    other = panacea_llama(seed=1)
    counter = ForwardCounter(other)
    torch.testing.assert_close(reference(other, PAIRS, tmp_path / "cache"), base_log_probs(1, PAIRS), rtol=0, atol=1e-5)
    assert counter.calls == 2


def test_adapter_weights_are_not_part_of_the_key():
    model = panacea_llama()
    before = reference_cache_key(model, PAIRS, SETTINGS)
    randomize_adapter(model, seed=7)
    assert reference_cache_key(model, PAIRS, SETTINGS) == before


def changed_token(pairs):
    first = pairs[0]
    return [TokenizedPair(first.id, first.prompt_ids, first.chosen_ids, [*first.rejected_ids[:-1], 40]), *pairs[1:]]


def test_a_changed_token_id_changes_the_key():
    model = panacea_llama()
    assert reference_cache_key(model, changed_token(PAIRS), SETTINGS) != reference_cache_key(model, PAIRS, SETTINGS)


def test_moving_a_token_between_prompt_and_response_changes_the_key():
    model = panacea_llama()
    one = [TokenizedPair("x", [5, 6], [7], [8])]
    other = [TokenizedPair("x", [5], [6, 7], [8])]
    assert reference_cache_key(model, one, SETTINGS) != reference_cache_key(model, other, SETTINGS)


def test_changed_settings_change_the_key():
    model = panacea_llama()
    changed = {**SETTINGS, "mixed_precision": "bf16"}
    assert reference_cache_key(model, PAIRS, changed) != reference_cache_key(model, PAIRS, SETTINGS)


def test_a_changed_base_weight_changes_the_key():
    model = panacea_llama()
    before = reference_cache_key(model, PAIRS, SETTINGS)
    with torch.no_grad():
        model.base_model.model.embed_tokens.weight[0, 0] += 1.0
    assert reference_cache_key(model, PAIRS, SETTINGS) != before


def test_changed_tokens_are_recomputed_not_reused(tmp_path):
    model = panacea_llama(seed=0)
    reference(model, PAIRS, tmp_path)
    counter = ForwardCounter(model)
    changed = changed_token(PAIRS)
    result = reference(model, changed, tmp_path)
    assert counter.calls > 0
    torch.testing.assert_close(result, base_log_probs(0, changed), rtol=0, atol=1e-5)


def test_changed_settings_are_recomputed_not_reused(tmp_path):
    model = panacea_llama()
    reference(model, PAIRS, tmp_path)
    counter = ForwardCounter(model)
    reference(model, PAIRS, tmp_path, settings={**SETTINGS, "format": 2})
    assert counter.calls > 0


def test_a_changed_base_weight_is_recomputed_not_reused(tmp_path):
    model = panacea_llama(seed=0)
    stale = reference(model, PAIRS, tmp_path)
    with torch.no_grad():
        model.base_model.lm_head.weight.mul_(2.0)
    counter = ForwardCounter(model)
    fresh = reference(model, PAIRS, tmp_path)
    assert counter.calls > 0
    assert (fresh - stale).abs().max() > 1e-3


def test_a_corrupt_cache_file_is_recomputed_with_a_warning(tmp_path, caplog):
    model = panacea_llama(seed=0)
    reference(model, PAIRS, tmp_path)
    path = tmp_path / f"{reference_cache_key(model, PAIRS, SETTINGS)}.safetensors"
    path.write_bytes(b"not a safetensors file")
    counter = ForwardCounter(model)
    with caplog.at_level(logging.WARNING, logger="panacea.training.reference"):
        result = reference(model, PAIRS, tmp_path)
    assert counter.calls > 0
    assert any(record.levelno == logging.WARNING and str(path) in record.getMessage() for record in caplog.records)
    torch.testing.assert_close(result, base_log_probs(0, PAIRS), rtol=0, atol=1e-5)


def test_a_recomputed_corrupt_file_is_rewritten(tmp_path):
    model = panacea_llama()
    reference(model, PAIRS, tmp_path)
    path = tmp_path / f"{reference_cache_key(model, PAIRS, SETTINGS)}.safetensors"
    path.write_bytes(b"")
    reference(model, PAIRS, tmp_path)
    counter = ForwardCounter(model)
    reference(model, PAIRS, tmp_path)
    assert counter.calls == 0


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_a_cache_file_that_does_not_fit_is_recomputed_with_a_warning(tmp_path, caplog, bad):
    from safetensors.torch import save_file

    model = panacea_llama()
    path = tmp_path / f"{reference_cache_key(model, PAIRS, SETTINGS)}.safetensors"
    logps = torch.zeros(2, 2) if bad == "shape" else torch.full((3, 2), float("nan"))
    save_file({"logps": logps}, path)
    counter = ForwardCounter(model)
    with caplog.at_level(logging.WARNING, logger="panacea.training.reference"):
        result = reference(model, PAIRS, tmp_path)
    assert counter.calls > 0
    assert torch.isfinite(result).all() and result.shape == (3, 2)
    assert any(record.levelno == logging.WARNING for record in caplog.records)
