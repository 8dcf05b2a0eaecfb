"""The *generations* scorer: answer held-out prompt sets at every λ and score the answers per dimension.

Prompt sets (data/prompts/, SOURCES.md says what each measures) and the dimensions they serve:

| set | prompts | serves |
|---|---|---|
| `helpful_test` | test instructions of helpful.jsonl.gz (AlpacaEval) | helpful, concise |
| `mt_bench` | MT-Bench first turns | helpful, concise |
| `harmless_test` | test prompts of harmless.jsonl.gz (PKU-SafeRLHF) | harmless |
| `harmbench` | HarmBench standard behaviours | harmless |
| `donotanswer` | Do-Not-Answer | harmless |
| `xstest_unsafe` | XSTest's unsafe prompts | harmless |
| `xstest_safe` | XSTest's safe prompts (over-refusal; reported, not in an objective) | helpful, harmless |

Every answer is greedy (`do_sample=False`), all grid points of a call in mixed-preference batches
(panacea.generation.generate_grid). Each set gets its refusal rate (panacea.eval.refusal, whose agreement
with XSTest's human labels is reported with the results), its mean length in tokens and words, and the
mean reward of each reward model of the dimensions it serves (panacea.eval.reward_model: a Bradley–Terry
head on frozen base-model features per dimension, trained once on that dimension's train pairs and cached;
its held-out accuracy is reported with the results). One number per dimension (ours):

- helpful: the helpful reward model's mean reward over `helpful_test` and `mt_bench` answers;
- harmless: the harmless reward model's mean reward over the four harmful sets' answers;
- concise: minus the mean length in words of the `helpful_test` and `mt_bench` answers.

`--limit K` keeps K prompts of each set, evenly spaced through the file (so MT-Bench keeps every category).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from panacea.adapters import PanaceaModel
from torch import Tensor

from panacea.data import PairSource
from panacea.generation import generate_grid

from .refusal import is_refusal, xstest_agreement
from .reward_model import RewardModel, score_responses, train_reward_model

DATA = Path("data")
PROMPTS = DATA / "prompts"


@dataclass(frozen=True)
class PromptSet:
    name: str
    file: str
    label: str | None  # keep only records with this label (XSTest's safe / unsafe); None: all
    serves: tuple[str, ...]


PROMPT_SETS = (
    PromptSet("helpful_test", "helpful_test.jsonl.gz", None, ("helpful", "concise")),
    PromptSet("mt_bench", "mt_bench.jsonl.gz", None, ("helpful", "concise")),
    PromptSet("harmless_test", "harmless_test.jsonl.gz", None, ("harmless",)),
    PromptSet("harmbench", "harmbench.jsonl.gz", None, ("harmless",)),
    PromptSet("donotanswer", "donotanswer.jsonl.gz", None, ("harmless",)),
    PromptSet("xstest_unsafe", "xstest_prompts.jsonl.gz", "unsafe", ("harmless",)),
    PromptSet("xstest_safe", "xstest_prompts.jsonl.gz", "safe", ("helpful", "harmless")),
)
OBJECTIVE_SETS = {
    "helpful": ("helpful_test", "mt_bench"),
    "harmless": ("harmless_test", "harmbench", "donotanswer", "xstest_unsafe"),
    "concise": ("helpful_test", "mt_bench"),
}
OBJECTIVES = {
    "helpful": "helpful reward-model score of answers to helpful prompts",
    "harmless": "harmless reward-model score of answers to harmful prompts",
    "concise": "minus the mean words of answers to helpful prompts",
}
REWARD_DIMENSIONS = ("helpful", "harmless")  # concise is scored by length
ACCURACY_KEYS = ("test_accuracy", "train_accuracy", "train_pairs", "test_pairs")


class GenerationsScorer:
    """Generate at every λ, then refusal rate, length and reward per prompt set; one objective per dimension."""

    name = "generations"

    def __init__(
        self,
        tokenizer,
        dimensions: Sequence[str],
        prompts: dict[str, list[dict]],
        reward_models: dict[str, RewardModel],
        *,
        max_new_tokens: int = 96,
        batch_size: int = 32,
    ) -> None:
        unknown = [name for name in dimensions if name not in OBJECTIVE_SETS]
        if unknown:
            raise ValueError(
                f"the generations scorer has no prompt sets for dimension(s) {unknown}; "
                f"it knows {list(OBJECTIVE_SETS)}."
            )
        self.tokenizer, self.dimensions, self.prompts = tokenizer, list(dimensions), prompts
        self.reward_models, self.max_new_tokens, self.batch_size = reward_models, max_new_tokens, batch_size
        self.objective = "; ".join(f"{name}: {OBJECTIVES[name]}" for name in self.dimensions)
        total = sum(len(records) for records in prompts.values())
        self.points_per_call = max(1, min(11, (4 * batch_size) // max(1, total)))

    @classmethod
    def from_run(cls, run, *, limit: int | None = None, max_new_tokens: int = 96, batch_size: int = 32):
        """The sets the run's dimensions need, and their reward models (trained now, or read from the cache)."""
        needed = [s for s in PROMPT_SETS if set(s.serves) & set(run.dimensions)]
        prompts = {s.name: load_prompts(s, limit) for s in needed}
        reward_models = {
            name: dimension_reward_model(run, name) for name in run.dimensions if name in REWARD_DIMENSIONS
        }
        return cls(
            run.tokenizer, run.dimensions, prompts, reward_models, max_new_tokens=max_new_tokens, batch_size=batch_size
        )

    def settings(self) -> dict:
        return {
            "decoding": self.decoding,
            "prompts": {name: [record["id"] for record in records] for name, records in self.prompts.items()},
            "reward_models": {name: rm.metadata.get("cache_key") for name, rm in self.reward_models.items()},
            "refusal_detector": _source_digest(is_refusal),
        }

    @property
    def decoding(self) -> dict:
        return {"do_sample": False, "max_new_tokens": self.max_new_tokens, "chat_template": True}

    def score(self, model: PanaceaModel, preferences: Tensor) -> list[dict]:
        """Per λ: {"objectives": {dimension: value}, "sets": {set: {refusal, tokens, words, reward_*}}, "responses"}."""
        names = list(self.prompts)
        flat = [record for name in names for record in self.prompts[name]]
        answers = generate_grid(
            model,
            self.tokenizer,
            [record["prompt"] for record in flat],
            preferences,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )
        rewards = {
            dimension: score_responses(
                reward_model,
                model,
                self.tokenizer,
                [record["prompt"] for record in flat] * len(answers),
                [text for point in answers for text in point],
                batch_size=self.batch_size,
            ).view(len(answers), len(flat))
            for dimension, reward_model in self.reward_models.items()
        }
        return [self._point(names, flat, point, texts, rewards) for point, texts in enumerate(answers)]

    def _point(self, names, flat, point: int, texts: list[str], rewards: dict[str, Tensor]) -> dict:
        sets, responses, start = {}, {}, 0
        per_set: dict[str, dict[str, np.ndarray]] = {}
        for name in names:
            records = self.prompts[name]
            chunk = texts[start : start + len(records)]
            tokens = np.array([len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in chunk])
            columns = {
                "refusal": np.array([is_refusal(text) for text in chunk], dtype=float),
                "tokens": tokens.astype(float),
                "words": np.array([len(text.split()) for text in chunk], dtype=float),
            }
            serves = next(s.serves for s in PROMPT_SETS if s.name == name)
            for dimension, values in rewards.items():
                if dimension in serves:
                    columns[f"reward_{dimension}"] = values[point, start : start + len(records)].double().numpy()
            per_set[name] = columns
            sets[name] = {key: float(value.mean()) for key, value in columns.items()} | {"prompts": len(records)}
            responses[name] = [{"id": r["id"], "text": text} for r, text in zip(records, chunk, strict=True)]
            start += len(records)
        objectives = {}
        for dimension in self.dimensions:
            pooled = [per_set[name] for name in OBJECTIVE_SETS[dimension] if name in per_set]
            if dimension == "concise":
                objectives[dimension] = -float(np.concatenate([c["words"] for c in pooled]).mean())
            else:
                objectives[dimension] = float(np.concatenate([c[f"reward_{dimension}"] for c in pooled]).mean())
        return {"objectives": objectives, "sets": sets, "responses": responses}

    def summary(self) -> dict:
        """What stands beside every result: the reward models' accuracies, the refusal detector's, the decoding."""
        agreement = xstest_agreement(DATA / "xstest.jsonl.gz")
        return {
            "decoding": self.decoding,
            "reward_models": {
                name: {key: rm.metadata.get(key) for key in ACCURACY_KEYS} for name, rm in self.reward_models.items()
            },
            "refusal_detector_xstest": {key: agreement[key] for key in ("dev", "test", "all", "precision", "recall")},
        }


def load_prompts(prompt_set: PromptSet, limit: int | None = None) -> list[dict]:
    """{"id", "prompt"} of a prompt set; with `limit`, that many evenly spaced through the file."""
    path = PROMPTS / prompt_set.file
    if not path.is_file():
        raise FileNotFoundError(f"prompt set {prompt_set.name}: {path} is missing (run from the repository root).")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    records = [
        {"id": r["id"], "prompt": r["prompt"]}
        for r in records
        if prompt_set.label is None or r["label"] == prompt_set.label
    ]
    if limit is not None and limit < len(records):
        records = [records[int(index)] for index in np.linspace(0, len(records) - 1, limit).round()]
    return records


REWARD_TRAIN_PAIRS, REWARD_TEST_PAIRS = 400, 100


def dimension_reward_model(run, dimension: str) -> RewardModel:
    """The reward model of `dimension`, on the train split of the run's first data file for it (cached).

    The same file, pair counts and settings for every run compared, so runs of one study share one cache entry.
    """
    index = run.dimensions.index(dimension)
    path = run.config.dimensions[index].train[0].path
    return train_reward_model(
        run.model,
        run.tokenizer,
        dimension,
        [PairSource(path, split="train", max_pairs=REWARD_TRAIN_PAIRS)],
        [PairSource(path, split="test", max_pairs=REWARD_TEST_PAIRS)],
        max_length=256,
        max_prompt_length=128,
        known_dimensions=run.dimensions,
    )


def _source_digest(function) -> str:
    """A hash of the module that defines `function`: a changed refusal detector gets a new cache key."""
    return hashlib.sha256(inspect.getsource(inspect.getmodule(function)).encode()).hexdigest()[:16]
