"""Scorers for a given λ. So far the *pairs* scorer: held-out DPO implicit-reward accuracy, win probability, margin.

For a pair (x, y_w, y_l) and the model at λ, the implicit reward is r̂(x, y) = β (log π_λ(y|x) −
log π_ref(y|x)) (Rafailov et al. 2023) and the pair's margin is r̂(y_w) − r̂(y_l). A dimension's objectives
(docs/algorithms.md §6, "Front objectives") pool its held-out pairs: accuracy (the share with a positive margin,
a tie counting ½; the default), win probability (the mean of σ(margin)) and the mean margin (a diagnostic). Every
pair's margin is kept with the point, so that intervals (panacea.eval.bootstrap) can be drawn from the results
alone. All λs of a grid are scored in mixed-preference batches: every row carries its own λ.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from panacea.adapters import PanaceaModel
from panacea.training.logprobs import DEFAULT_TOKEN_BUDGET, pair_log_probs
from panacea.training.objectives import reward_margin
from panacea.training.reference import reference_log_probs, update_with_pairs
from panacea.training.rl import reward_fit_sources, reward_folder
from panacea.training.trainer import reference_settings
from torch import Tensor

from panacea._io import read_json
from panacea._names import SCORER_OBJECTIVES
from panacea.data import PairSource, TokenizedPair, load_dimension

from .bootstrap import TRANSFORMS, token_cluster
from .reward_model import CONFIG_FILE as REWARD_CONFIG_FILE


@dataclass
class PairSet:
    """Held-out pairs of one dimension from one source, e.g. ('harmless', 'xstest')."""

    dimension: str
    label: str  # a short name for tables: the source file's stem
    pairs: list[TokenizedPair]
    beta: float

    @property
    def name(self) -> str:
        """'dimension/label'; `eval.report.set_dimension` reads the dimension back."""
        return f"{self.dimension}/{self.label}"


@torch.no_grad()
def score_pairs(
    model: PanaceaModel,
    pair_sets: Sequence[PairSet],
    preferences: Tensor,
    *,
    pad_token_id: int,
    batch_size: int,
    reference_settings: dict,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> list[dict[str, dict[str, float]]]:
    """For each λ in `preferences` (n, m): {set name: {"accuracy", "win_probability", "margin", "pairs", "values"}}.

    `values` holds every pair's margin ({"margin": [...]}, in the set's order, 7 significant digits).

    `batch_size` is the reference pass's pairs per forward; the policy's forwards hold about `token_budget`
    padded tokens of [prompt, chosen, rejected] rows (panacea.training.logprobs.pair_log_probs).
    """
    was_training = model.training
    model.eval()
    results: list[dict[str, dict[str, float]]] = [{} for _ in range(len(preferences))]
    try:
        for pair_set in pair_sets:
            reference = reference_log_probs(
                model,
                pair_set.pairs,
                pad_token_id=pad_token_id,
                batch_size=batch_size,
                settings=reference_settings,
                autocast=autocast,
            )
            policy = pair_log_probs(
                model,
                pair_set.pairs,
                preferences,
                pad_token_id=pad_token_id,
                token_budget=token_budget,
                autocast=autocast,
            )  # (n, pairs, 2): every λ in mixed-preference batches, each prompt run once for both responses
            margins = reward_margin(
                policy[..., 0], policy[..., 1], reference[:, 0], reference[:, 1], pair_set.beta
            )  # (n, pairs)
            for point, row in enumerate(margins.double().numpy()):
                results[point][pair_set.name] = {  # each objective's own transform (OBJECTIVES), per set
                    name: float(TRANSFORMS[transform](row).mean()) for name, (transform, _, _) in OBJECTIVES.items()
                } | {
                    "pairs": len(row),
                    "values": {"margin": [float(f"{value:.7g}") for value in row.tolist()]},
                }
    finally:
        model.train(was_training)
    return results


def score_run_pairs(
    model: PanaceaModel,
    pair_sets: Sequence[PairSet],
    preferences: Tensor,
    config,
    pad_token_id: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> list[dict[str, dict[str, float]]]:
    """`score_pairs` with a `TrainConfig`'s evaluation batch size and reference settings (the run's own)."""
    return score_pairs(
        model,
        pair_sets,
        preferences,
        pad_token_id=pad_token_id,
        batch_size=config.eval_batch_size,
        reference_settings=reference_settings(config),
        autocast=autocast,
    )


HELD_OUT_SPLITS = ("test", "validation")  # what `panacea eval --split` scores (docs/evaluation.md, 'Validation')


def _saved_reward_sources(spec, index: int) -> list[tuple[str, str, str, str]]:
    """(where, source, split, fix) of each pair source a saved in-project reward model (`reward_model` with a
    `path`) was fitted on, from its metadata (`train_sources`: PairSource.describe's "PATH (… split 'S')"); [] for
    any other reward. A saved head that does not record them is refused: which prompts the policy was optimised
    toward is unknown."""
    if not (isinstance(spec, dict) and spec.get("type") == "reward_model" and spec.get("path") is not None):
        return []
    folder = reward_folder(spec)
    described = read_json(folder / REWARD_CONFIG_FILE).get("metadata", {}).get("train_sources")
    if not isinstance(described, list) or not described:
        raise ValueError(
            f"dimensions.{index}.reward.path ({folder}): the saved reward model does not record the pairs it was "
            "fitted on, so a validation score cannot tell whether its policy was optimised toward the validation "
            "prompts; score this run on test, or use a reward model fitted by panacea on split 'fit'."
        )
    sources = []
    for text in described:
        split = re.search(r"split '([^']*)'\)$", str(text))
        found = split.group(1) if split else "unknown"
        sources.append(("reward.path", f"{folder}: {text}", found, "a reward model fitted on split 'fit'"))
    return sources


def validation_sources(config) -> dict[str, list[PairSource]]:
    """Per dimension, the 'validation' part of each file it trains on (panacea.data.DERIVED_SPLITS), never a test pair.

    Refuses a run that trained on the validation prompts (a train source whose split is not 'fit'; for an RL
    dimension, which never reads its `train` pairs, a pair source of the reward model its policy was optimised
    against), naming the source: tuning on pairs the model was fitted to measures memory, not the setting.
    """
    sources = {}
    for index, dimension in enumerate(config.dimensions):
        if dimension.objective == "rl":
            fitted, _ = reward_fit_sources(dimension.reward, dimension.name, config.dimension_names)
            trained = [(f"reward.train.{n}", source) for n, source in enumerate(fitted.get("train", []))]
            what = "fits its reward model on split"
        else:
            trained = [(f"train.{n}", source) for n, source in enumerate(dimension.train)]
            what = "trains on split"
        checked = [(where, s.path, s.split, f"--set dimensions.{index}.{where}.split=fit") for where, s in trained]
        checked += _saved_reward_sources(dimension.reward, index)  # [] but for an RL dimension's saved head
        for where, path, split, fix in checked:
            if split != "fit":
                raise ValueError(
                    f"dimensions.{index}.{where} ({path}, dimension {dimension.name!r}) {what} {split!r}, which holds "
                    "the validation prompts: score on validation only a run trained with split 'fit' (the train "
                    f"prompts less the validation ones), e.g. with {fix}."
                )
        unique: dict[tuple, PairSource] = {}  # each file once, in order
        for source in dimension.train:
            unique.setdefault((source.path, source.dim), source)
        sources[dimension.name] = [
            PairSource(s.path, split="validation", dim=s.dim, columns=s.columns) for s in unique.values()
        ]
    return sources


def load_pair_sets(config, tokenizer, split: str = "test") -> list[PairSet]:
    """The held-out pair sets of a `TrainConfig`, tokenized as in training: each dimension's `eval` sources
    (`split` "test"), or the validation part of the files it trains on ("validation": `validation_sources`)."""
    if split not in HELD_OUT_SPLITS:
        raise ValueError(f"split must be one of {list(HELD_OUT_SPLITS)}, got {split!r}.")
    held_out = validation_sources(config) if split == "validation" else {d.name: d.eval for d in config.dimensions}
    sets = []
    for dimension in config.dimensions:
        for source in held_out[dimension.name]:
            pairs, _ = load_dimension(
                [source], dimension.name, config.dimension_names, tokenizer, config.max_length, config.max_prompt_length
            )
            label = Path(source.path).name.split(".")[0] + ("-validation" if split == "validation" else "")
            taken = {pair_set.name for pair_set in sets}
            if f"{dimension.name}/{label}" in taken:  # two sources with one file stem: keep both columns apart
                label = f"{label}-{sum(name.startswith(f'{dimension.name}/{label}') for name in taken) + 1}"
            sets.append(PairSet(dimension.name, label, pairs, dimension.beta))
    return sets


OBJECTIVES = {  # name -> (how a pair's margin enters it, bounded, description); docs/algorithms.md §6
    "accuracy": ("win", True, "held-out preference accuracy (share of pairs with r̂(y_w) > r̂(y_l), ties ½)"),
    "win_probability": ("sigmoid", True, "mean win probability σ(r̂(y_w) − r̂(y_l)) over held-out pairs"),
    "margin": ("identity", False, "mean implicit-reward margin r̂(y_w) − r̂(y_l) (a diagnostic: unbounded)"),
}
DEFAULT_OBJECTIVE = "accuracy"
assert tuple(OBJECTIVES) == SCORER_OBJECTIVES["pairs"]  # the CLI's list (panacea._names) names the same, default first


class PairsScorer:
    """The *pairs* scorer for a sweep: per dimension, accuracy / win probability / margin over its held-out pairs.

    A dimension's objectives pool all of its pair sets (e.g. the test split and XSTest), each pair counted once;
    every set's numbers and every pair's margin are kept beside them. Deterministic, and fast: one forward per
    (pair, λ) row, all λs of a call in mixed-preference batches.
    """

    name = "pairs"
    # λs per call, each cached as soon as its call returns: several where the held-out sets are small (mixed-λ
    # batches fill up), one where one λ's pairs alone fill many batches, so an interrupt loses at most one λ's work
    MAX_POINTS_PER_CALL, ROWS_PER_CALL = 4, 512
    default_objective = DEFAULT_OBJECTIVE

    def __init__(
        self,
        pair_sets: Sequence[PairSet],
        dimensions: Sequence[str],
        *,
        pad_token_id: int,
        batch_size: int,
        reference_settings: dict,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        missing = [name for name in dimensions if not any(pair_set.dimension == name for pair_set in pair_sets)]
        if missing:
            raise ValueError(f"the pairs scorer has no held-out pairs for dimension(s) {missing}: add `eval` sources.")
        self.pair_sets, self.dimensions = list(pair_sets), list(dimensions)
        self.pad_token_id, self.batch_size = pad_token_id, batch_size
        pairs = sum(len(pair_set.pairs) for pair_set in self.pair_sets)
        self.points_per_call = max(1, min(self.MAX_POINTS_PER_CALL, self.ROWS_PER_CALL // max(1, pairs)))
        self.reference_settings, self.autocast = reference_settings, autocast

    @classmethod
    def from_run(cls, run, limit: int | None = None) -> PairsScorer:
        """The run's held-out pair sets (its config's `eval` sources, or its validation pairs where `run.split` is
        "validation"), the first `limit` pairs of each."""
        pair_sets = load_pair_sets(run.config, run.tokenizer, run.split)
        if limit is not None:
            pair_sets = [PairSet(s.dimension, s.label, s.pairs[:limit], s.beta) for s in pair_sets]
        return cls(
            pair_sets,
            run.dimensions,
            pad_token_id=run.tokenizer.pad_token_id,
            batch_size=run.config.eval_batch_size,
            reference_settings=reference_settings(run.config),
            autocast=run.autocast,
        )

    @property
    def objective(self) -> str:
        return OBJECTIVES[DEFAULT_OBJECTIVE][2]

    def objectives(self) -> dict:
        """Every objective as data: per dimension the sets it pools, the per-pair column and its transform."""
        sets = {name: [s.name for s in self.pair_sets if s.dimension == name] for name in self.dimensions}
        return {
            objective: {
                "description": description,
                "bounded": bounded,
                "dimensions": {
                    name: {"sets": sets[name], "column": "margin", "transform": transform} for name in self.dimensions
                },
            }
            for objective, (transform, bounded, description) in OBJECTIVES.items()
        }

    def items(self) -> dict[str, list[str]]:
        """Per set, each pair's bootstrap cluster: its prompt (the templated prompt's token ids)."""
        return {s.name: [token_cluster(pair.prompt_ids) for pair in s.pairs] for s in self.pair_sets}

    def settings(self) -> dict:
        """What the numbers depend on besides the adapter: every set's pairs (as a hash of their ids) and β."""
        return {
            "sets": {
                s.name: {"pairs": len(s.pairs), "beta": s.beta, "ids": _pairs_digest(s.pairs)} for s in self.pair_sets
            },
            "reference": self.reference_settings,
        }

    def cache_settings(self) -> dict:
        """`settings`, as the point cache's key holds them."""
        return self.settings()

    def rejudge(self, result: dict) -> dict:
        """A point read from the cache, as it is: nothing in it is judged after scoring."""
        return result

    def score(self, model: PanaceaModel, preferences: Tensor) -> list[dict]:
        """Per λ: {"sets": {set: {accuracy, win_probability, margin, pairs, values}}}."""
        results = score_pairs(
            model,
            self.pair_sets,
            preferences,
            pad_token_id=self.pad_token_id,
            batch_size=self.batch_size,
            reference_settings=self.reference_settings,
            autocast=self.autocast,
        )
        return [{"sets": point} for point in results]

    def summary(self) -> dict:
        return {}


def _pairs_digest(pairs: Sequence[TokenizedPair]) -> str:
    digest = hashlib.sha256()
    update_with_pairs(digest, pairs)
    return digest.hexdigest()[:16]
