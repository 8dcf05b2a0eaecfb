"""RL's inputs: prompt sources (panacea.data), the λ of each rollout row, and mixed-λ sampling (panacea.generation)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from panacea.training.rl_step import draw_rollout_preferences

from panacea.data import (
    PairSource,
    PromptSource,
    in_validation_fold,
    load_pairs,
    load_prompt_source,
    tokenize_pairs,
    tokenize_prompts,
)
from panacea.generation import sample_responses
from panacea.serving.sampling import row_generator
from tests.conftest import panacea_llama, tiny_tokenizer
from tests.helpers import make_config

# ------------------------------------------------------------------------------------------------------
# Prompt sources


def write_jsonl(path, rows):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def pair(index, prompt, split="train", dim="helpful"):
    return {"id": f"p{index}", "prompt": prompt, "chosen": "w5", "rejected": "w6", "dim": dim, "split": split}


def test_a_pair_files_prompts_are_its_distinct_prompts_of_the_split_and_dim_under_their_first_id(tmp_path):
    rows = [
        pair(0, "w4 w5"),
        pair(1, "w4 w5"),  # a second pair of the same prompt: one prompt, id of the first
        pair(2, "w6", split="test"),
        pair(3, "w7", dim="harmless"),
        pair(4, "w8 w9"),
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl.gz", rows)
    records = load_prompt_source(PromptSource(str(path)))
    assert [(r.id, r.prompt) for r in records] == [("p0", "w4 w5"), ("p3", "w7"), ("p4", "w8 w9")]
    assert records[0].where == f"{path}:1"
    assert [r.prompt for r in load_prompt_source(PromptSource(str(path), dim="helpful"))] == ["w4 w5", "w8 w9"]
    assert [r.prompt for r in load_prompt_source(PromptSource(str(path), split="test"))] == ["w6"]
    # the same prompts load_pairs keeps for a split, deduplicated
    assert {r.prompt for r in load_prompt_source(PromptSource(str(path), dim="helpful"))} == {
        p.prompt for p in load_pairs(PairSource(str(path)), "helpful", ["helpful", "harmless"])
    }


def test_fit_and_validation_carve_a_pair_files_train_prompts_by_prompt_as_load_pairs_does(tmp_path):
    prompts = [f"w{4 + i} w{40 + i % 9} w{20 + i % 5}" for i in range(48)]
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair(i, text) for i, text in enumerate(prompts)])
    fit = [r.prompt for r in load_prompt_source(PromptSource(str(path), split="fit"))]
    validation = [r.prompt for r in load_prompt_source(PromptSource(str(path), split="validation"))]
    assert validation and fit and sorted(fit + validation) == sorted(prompts)
    assert all(in_validation_fold(text) for text in validation) and not any(in_validation_fold(text) for text in fit)


def test_a_prompt_file_without_split_is_used_whole_and_max_prompts_keeps_a_seeded_subset_in_order(tmp_path):
    rows = [{"id": f"q{i}", "prompt": f"w{10 + i}", "label": "x", "source": "s"} for i in range(10)]
    path = write_jsonl(tmp_path / "prompts.jsonl.gz", rows)
    assert len(load_prompt_source(PromptSource(str(path)))) == 10
    subset = [r.id for r in load_prompt_source(PromptSource(str(path), max_prompts=4, seed=3))]
    again = [r.id for r in load_prompt_source(PromptSource(str(path), max_prompts=4, seed=3))]
    other = [r.id for r in load_prompt_source(PromptSource(str(path), max_prompts=4, seed=4))]
    assert subset == again and len(subset) == 4 and subset == sorted(subset, key=lambda i: int(i[1:]))
    assert subset != other


def test_a_bad_prompt_record_names_file_line_and_id_never_the_text(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [pair(0, "w4"), {"id": "x9", "prompt": "   ", "split": "train"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2 id=x9: 'prompt' must be a non-empty string") as error:
        load_prompt_source(PromptSource(str(path)))
    assert "w4" not in str(error.value)
    with pytest.raises(ValueError, match=r"no prompts \(the source has train 1\)"):
        load_prompt_source(PromptSource(str(write_jsonl(tmp_path / "one.jsonl", [pair(0, "w4")])), dim="harmless"))
    with pytest.raises(ValueError, match=r"PromptSource.max_prompts must be None or an integer >= 1, got 0"):
        PromptSource("x.jsonl", max_prompts=0)
    with pytest.raises(ValueError, match=r"PromptSource.split must be one of"):
        PromptSource("x.jsonl", split="dev")


def test_prompt_ids_are_those_tokenize_pairs_gives_the_pairs_prompts(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair(0, "w4 w5 w6 w7 w8 w9 w10"), pair(1, "w11")])
    records = load_pairs(PairSource(str(path)), "helpful", ["helpful"])
    for tokenizer in (tiny_tokenizer(), chat_tokenizer()):
        pairs, _ = tokenize_pairs(records, tokenizer, max_length=12, max_prompt_length=4)
        assert tokenize_prompts([r.prompt for r in records], tokenizer, 4) == [p.prompt_ids for p in pairs]


def chat_tokenizer():
    """The tiny tokenizer with a chat template: user turns 'w60 … w61', assistant turns 'w62 … w61'."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}w60 {{ m['content'] }} w61 {% else %}w62 "
        "{{ m['content'] }} w61 {% endif %}{% endfor %}{% if add_generation_prompt %}w62 {% endif %}"
    )
    return tokenizer


# ------------------------------------------------------------------------------------------------------
# The λ of each rollout row


@pytest.mark.parametrize(
    ("sampling", "groups"), [("per_sample", 1), ("groups", 2), ("per_step", 1)], ids=["per_sample", "groups", "step"]
)
def test_each_prompt_gets_one_lambda_and_a_groups_prompts_share_it(workspace, tmp_path, sampling, groups):
    config = make_config(
        workspace,
        tmp_path / "run",
        preference_sampling=sampling,
        preference_groups=groups,
        dimensions=[
            {"name": "a", "objective": "rl", "reward": {"type": "length"}},
            {"name": "b", "objective": "rl", "reward": {"type": "length", "unit": "words"}},
        ],
        rl={"prompts": [{"path": str(workspace / "a.jsonl")}], "prompts_per_step": 4, "rollouts_per_prompt": 2},
    )
    per_prompt, group_rows = draw_rollout_preferences(config, 3)
    assert per_prompt.shape == (4, 2) and torch.allclose(per_prompt.sum(1), torch.ones(4))
    again, _ = draw_rollout_preferences(config, 3)
    assert torch.equal(per_prompt, again) and not torch.equal(per_prompt, draw_rollout_preferences(config, 4)[0])
    distinct = {tuple(row.tolist()) for row in per_prompt}
    assert len(distinct) == {"per_sample": 4, "groups": 2, "per_step": 1}[sampling]
    if sampling == "groups":
        assert torch.equal(per_prompt, group_rows.repeat_interleave(2, dim=0))


# ------------------------------------------------------------------------------------------------------
# Mixed-λ sampling

PROMPTS = [[5, 9, 11], [7], [20, 21, 22, 23, 24], [30, 31], [5, 9, 11]]  # different lengths: left-padded rows


def generators(seeds):
    return [row_generator(seed, torch.device("cpu")) for seed in seeds]


def test_per_sample_lambda_rollouts_equal_one_lambda_at_a_time_token_for_token():
    """Each row of one mixed-λ call samples what it samples alone at its λ with its generator, whatever the rows
    beside it, and finished rows leave the batch without disturbing the others."""
    model = panacea_llama().eval()
    preferences = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
    seeds = [11, 12, 13, 14, 11]  # rows 0 and 4: the same prompt and seed, at two λs
    settings = dict(max_new_tokens=12, temperature=1.3, top_p=0.9, eos_token_ids={2, 40, 41}, pad_token_id=0)
    mixed = sample_responses(model, PROMPTS, preferences, generators(seeds), **settings)
    alone = [
        sample_responses(model, [prompt], preference[None], generators([seed]), **settings)[0]
        for prompt, preference, seed in zip(PROMPTS, preferences, seeds, strict=True)
    ]
    assert mixed == alone
    lengths = [len(tokens) for tokens in mixed]
    assert min(lengths) < 12 == max(lengths), lengths  # some rows stopped early at an EOS, some ran to the limit
    assert all(tokens[-1] in {2, 40, 41} for tokens in mixed if len(tokens) < 12)
    assert mixed[0] != mixed[4]  # the same prompt and generator at another λ: λ reaches the sampled tokens
    one_lambda = preferences[:1].expand(5, -1)
    assert sample_responses(model, PROMPTS, one_lambda, generators(seeds), **settings)[4] == mixed[0]


def test_sample_responses_refuses_mismatched_rows():
    with pytest.raises(ValueError, match=r"preferences \(n, m\) and n generators"):
        sample_responses(
            panacea_llama(), PROMPTS, torch.ones(4, 2) / 2, generators(range(5)), max_new_tokens=2,
            eos_token_ids={2}, pad_token_id=0,
        )  # fmt: skip
