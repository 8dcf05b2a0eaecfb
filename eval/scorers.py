"""Scorers for a given λ. So far the *pairs* scorer: held-out DPO implicit-reward accuracy and margin.

For a pair (x, y_w, y_l) and the model at λ, the implicit reward is r̂(x, y) = β (log π_λ(y|x) −
log π_ref(y|x)); the pair counts as correct when r̂(y_w) > r̂(y_l), and the margin is r̂(y_w) − r̂(y_l)
(Rafailov et al. 2023). All λs of a grid are scored in mixed-preference batches: every row carries
its own λ, so one forward covers several grid points.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from panacea.adapters import PanaceaModel
from panacea.training.logprobs import collate_pairs, response_log_probs
from panacea.training.objectives import reward_margin
from panacea.training.reference import reference_log_probs, update_with_pairs
from panacea.training.trainer import reference_settings
from torch import Tensor

from panacea.data import TokenizedPair, load_dimension


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
) -> list[dict[str, dict[str, float]]]:
    """For each λ in `preferences` (n, m): {set name: {"accuracy", "margin", "pairs"}}.

    `batch_size` counts (pair, λ) combinations per forward (two rows each: chosen and rejected).
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
            policy = _policy_log_probs(model, pair_set.pairs, preferences, pad_token_id, batch_size, autocast)
            margins = reward_margin(
                policy[..., 0], policy[..., 1], reference[:, 0], reference[:, 1], pair_set.beta
            )  # (n, pairs)
            for point, row in enumerate(margins):
                results[point][pair_set.name] = {
                    "accuracy": float((row > 0).double().mean()),
                    "margin": float(row.double().mean()),
                    "pairs": len(row),
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


def _policy_log_probs(
    model: PanaceaModel,
    pairs: Sequence[TokenizedPair],
    preferences: Tensor,
    pad_token_id: int,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> Tensor:
    """Summed response log-probs (n, pairs, 2) at every λ, batching (pair, λ) combinations of similar length."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids))
    combos = [(pair, point) for pair in order for point in range(len(preferences))]
    result = torch.empty(len(preferences), len(pairs), 2)
    device_preferences = preferences.to(model.device)
    for start in range(0, len(combos), batch_size):
        chunk = combos[start : start + batch_size]
        batch = collate_pairs([pairs[pair] for pair, _ in chunk], pad_token_id).to(model.device)
        rows = device_preferences[[point for _, point in chunk]].repeat(2, 1)  # chosen rows, then rejected rows
        with autocast():
            logps = response_log_probs(model, batch, preference=rows).float().cpu().view(2, len(chunk))
        for slot, (pair, point) in enumerate(chunk):
            result[point, pair] = logps[:, slot]
    return result


def load_pair_sets(config, tokenizer) -> list[PairSet]:
    """The held-out pair sets of a `TrainConfig`: each dimension's `eval` sources, tokenized as in training."""
    sets = []
    for dimension in config.dimensions:
        for source in dimension.eval:
            pairs, _ = load_dimension(
                [source], dimension.name, config.dimension_names, tokenizer, config.max_length, config.max_prompt_length
            )
            label = Path(source.path).name.split(".")[0]
            taken = {pair_set.name for pair_set in sets}
            if f"{dimension.name}/{label}" in taken:  # two sources with one file stem: keep both columns apart
                label = f"{label}-{sum(name.startswith(f'{dimension.name}/{label}') for name in taken) + 1}"
            sets.append(PairSet(dimension.name, label, pairs, dimension.beta))
    return sets


class PairsScorer:
    """The *pairs* scorer for a sweep: per dimension, the mean implicit-reward margin over its held-out pairs.

    A dimension's objective pools all of its pair sets (e.g. the test split and XSTest), each pair counted
    once; every set's accuracy and margin are kept beside it. Deterministic, and fast: one forward per
    (pair, λ) row, all λs of a call in mixed-preference batches.
    """

    name = "pairs"
    points_per_call = 4  # λs per call: each is cached as soon as its call returns
    objective = "mean DPO implicit-reward margin over the dimension's held-out pairs (all its sets pooled)"

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
        self.reference_settings, self.autocast = reference_settings, autocast

    @classmethod
    def from_run(cls, run, limit: int | None = None) -> PairsScorer:
        """The run's own held-out pair sets (its config's `eval` sources), the first `limit` pairs of each."""
        pair_sets = load_pair_sets(run.config, run.tokenizer)
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

    def settings(self) -> dict:
        """What the numbers depend on besides the adapter: every set's pairs (as a hash of their ids) and β."""
        return {
            "sets": {
                s.name: {"pairs": len(s.pairs), "beta": s.beta, "ids": _pairs_digest(s.pairs)} for s in self.pair_sets
            },
            "reference": self.reference_settings,
        }

    def score(self, model: PanaceaModel, preferences: Tensor) -> list[dict]:
        """Per λ: {"objectives": {dimension: pooled margin}, "sets": {set: {accuracy, margin, pairs}}}."""
        results = score_pairs(
            model,
            self.pair_sets,
            preferences,
            pad_token_id=self.pad_token_id,
            batch_size=self.batch_size,
            reference_settings=self.reference_settings,
            autocast=self.autocast,
        )
        return [{"objectives": self._pooled(point), "sets": point} for point in results]

    def _pooled(self, point: dict[str, dict[str, float]]) -> dict[str, float]:
        pooled = {}
        for name in self.dimensions:
            sets = [point[s.name] for s in self.pair_sets if s.dimension == name]
            pooled[name] = sum(s["margin"] * s["pairs"] for s in sets) / sum(s["pairs"] for s in sets)
        return pooled

    def summary(self) -> dict:
        return {}


def _pairs_digest(pairs: Sequence[TokenizedPair]) -> str:
    digest = hashlib.sha256()
    update_with_pairs(digest, pairs)
    return digest.hexdigest()[:16]
