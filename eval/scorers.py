"""Scorers for a given λ. So far the *pairs* scorer: held-out DPO implicit-reward accuracy and margin.

For a pair (x, y_w, y_l) and the model at λ, the implicit reward is r̂(x, y) = β (log π_λ(y|x) −
log π_ref(y|x)); the pair counts as correct when r̂(y_w) > r̂(y_l), and the margin is r̂(y_w) − r̂(y_l)
(Rafailov et al. 2023). All λs of a grid are scored in mixed-preference batches: every row carries
its own λ, so one forward covers several grid points.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from panacea.adapters import PanaceaModel
from panacea.training.logprobs import collate_pairs, response_log_probs
from panacea.training.objectives import reward_margin
from panacea.training.reference import reference_log_probs
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
