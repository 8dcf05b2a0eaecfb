"""Reward models: one Bradley–Terry head per dimension on frozen base-model features, trained once and cached.

A response's features φ(x, y) are the frozen base model's final-layer hidden state h (after the final norm:
in transformers 5 `hidden_states[-1]` of a Llama equals `last_hidden_state`, the input of the LM head; checked)
at the last token of prompt + response, concatenated with the mean of h over the response tokens, with the
adapter disabled; chat template and truncation are those of training (`panacea.data.tokenize_pairs`). The
head is linear on standardised features, r(x, y) = w·z + b with z = (φ − μ) / s, fitted to the dimension's
train pairs with the Bradley–Terry loss (Bradley & Terry 1952; the reward-model loss of Ouyang et al. 2022 with
a linear head):

    L(w) = mean_pairs softplus(−(r(x, y_w) − r(x, y_l))) + (weight_decay / 2)·‖w‖²

by full-batch L-BFGS in float64 from a seeded start. The objective is strictly convex, so every seed reaches
the same optimum (to the solver's tolerance); a given seed gives bit-identical weights. b cancels in
r(y_w) − r(y_l) and is not identified by the data: we fix it at 0, which centres the rewards of the train
responses at 0 (z is standardised on them). Nothing is held out of train; the accuracy beside every result is
the share of the dimension's *test* pairs with r(y_w) > r(y_l), train accuracy next to it.

Feature choice and weight decay, measured on 2026-11-30: embedded SmolLM2-135M-Instruct (hidden size 576), fp32
on one CPU thread; PairSource seed 0, 400 train / 100 test pairs per dimension, max_length 256, max_prompt_length
128, head seed 0. Both summaries came from one pass over the 1,000 responses per dimension (helpful 459 s,
harmless 342 s at batch 8); a head fits in < 0.5 s. CV = 5-fold cross-validated accuracy on the 400 train pairs
(folds seeded 0), which is what chose; test = the 100 test pairs (standard error about ±0.045), not used to choose.

    features                  weight decay   helpful CV / test   harmless CV / test
    last token (576)          0.1            0.730 / 0.79        0.700 / 0.63
    last token                3              0.730 / 0.78        0.662 / 0.66
    response mean (576)       1              0.728 / 0.73        0.752 / 0.66
    last token + mean (1152)  0.1            0.733 / 0.77        0.710 / 0.63
    last token + mean         3  (kept)      0.755 / 0.77        0.723 / 0.69
    last token + mean         10             0.757 / 0.76        0.715 / 0.63

Kept: last token + response mean with weight decay 3, the best CV on both dimensions together (the mean alone
is best on harmless but weaker on helpful; 1e-3 and 1e-2 fit the train pairs perfectly and score lower). With
these defaults train / test accuracy is helpful 0.848 / 0.77 and harmless 0.848 / 0.69; `train_reward_model`
on harmless end to end took 403 s (features 402 s, fit 0.07 s; the second call, a cache hit, 0.35 s).
Caveat for helpful: its GPT-4 labels favour length, and "the longer response (tokens after truncation) wins"
scores 0.83 on these 100 test pairs (0.73 on the 400 train pairs), more than the helpful reward model; on
harmless it scores 0.47.

The cache key is a sha256 of everything the head depends on (the reference log-prob cache's pattern): the
base model (fingerprint, parameter count and a strided sample of every base weight), the exact token ids of
every train and test pair (so the data, the chat template and the truncation are in it), the settings and the
feature kind. A second call with the same inputs loads the head without running the base model.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from panacea.adapters import PanaceaModel
from panacea.adapters.serialization import base_model_fingerprint
from panacea.training.logprobs import collate_pairs
from panacea.training.reference import update_with_pairs, update_with_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from panacea._io import atomic_directory, read_json, write_json
from panacea.base_model import REWARD_MODELS, SEEDED_FOLDER_MARK, cache_dir, seeded
from panacea.data import PairRecord, PairSource, TokenizedPair, TruncationStats, load_dimension, tokenize_pairs

logger = logging.getLogger(__name__)

FEATURE_KIND = "last_token+response_mean"  # chosen by the measurement in the module docstring
FORMAT = "panacea-reward-model/1"
WEIGHTS_FILE = "reward_model.safetensors"
CONFIG_FILE = SEEDED_FOLDER_MARK  # written last: a cached reward model whose folder holds it is whole
TENSOR_NAMES = ("weight", "bias", "mean", "std")
DEFAULT_WEIGHT_DECAY = 3.0  # chosen by 5-fold cross-validation on train pairs (module docstring)
_ADAPTER_KEYS = ("lora_A", "lora_B", "singular_values", "preference_scale")  # left out of the base identity
_MIN_STD = 1e-6  # a constant feature is divided by 1, not by ~0


# ------------------------------------------------------------------------------------------------------
# The head


@dataclass
class RewardModel:
    """A linear Bradley–Terry reward r = w·((φ − mean) / std) + b on base-model features φ of size F."""

    dimension: str = field(metadata={"help": "The dimension whose pairs trained it, e.g. 'harmless'."})
    weight: Tensor = field(metadata={"help": "w, shape (F,), float32."})
    bias: Tensor = field(metadata={"help": "b, shape (), float32; 0 when fitted (not identified by the loss)."})
    mean: Tensor = field(metadata={"help": "Feature mean μ of the train responses, shape (F,)."})
    std: Tensor = field(metadata={"help": "Feature standard deviation of the train responses (≥ 1e-6), (F,)."})
    metadata: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "JSON-able facts: accuracies, pair counts, cache key, base model, settings."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.dimension, str) or not self.dimension.strip():
            raise ValueError(f"RewardModel.dimension must be a non-empty name, got {self.dimension!r}.")
        self.weight, self.mean, self.std = (
            torch.as_tensor(t, dtype=torch.float32) for t in (self.weight, self.mean, self.std)
        )
        self.bias = torch.as_tensor(self.bias, dtype=torch.float32).reshape(())
        size = self.weight.shape
        if self.weight.ndim != 1 or self.mean.shape != size or self.std.shape != size:
            raise ValueError(
                f"RewardModel({self.dimension!r}): weight, mean and std must all have shape (F,), got "
                f"{tuple(self.weight.shape)}, {tuple(self.mean.shape)}, {tuple(self.std.shape)}."
            )
        tensors = (self.weight, self.bias, self.mean, self.std)
        if not all(torch.isfinite(t).all() for t in tensors) or not (self.std > 0).all():
            raise ValueError(f"RewardModel({self.dimension!r}): weights must be finite and std positive.")

    @property
    def feature_size(self) -> int:
        return self.weight.numel()

    def score(self, features: Tensor) -> Tensor:
        """Rewards (n,) of features (n, F)."""
        if features.ndim != 2 or features.shape[1] != self.feature_size:
            raise ValueError(
                f"RewardModel({self.dimension!r}) scores features of shape (n, {self.feature_size}), got "
                f"{tuple(features.shape)}; were they computed with another base model or feature kind?"
            )
        features = features.to(self.weight.device, torch.float32)
        return ((features - self.mean) / self.std) @ self.weight + self.bias

    def accuracy(self, chosen: Tensor, rejected: Tensor) -> float:
        """Share of pairs with r(y_w) > r(y_l) (a tie counts as wrong); inputs (n, F) each."""
        _check_pairs(chosen, rejected)
        return int((self.score(chosen) > self.score(rejected)).sum()) / len(chosen)

    def summary(self) -> str:
        """One line to print beside a result: `helpful RM: test acc 0.71 (100 pairs), train 0.93 (400)`."""
        meta = self.metadata
        if "test_accuracy" not in meta:
            return f"{self.dimension} RM (accuracy unknown)"
        return (
            f"{self.dimension} RM: test acc {meta['test_accuracy']:.3f} ({meta['test_pairs']} pairs), "
            f"train {meta['train_accuracy']:.3f} ({meta['train_pairs']})"
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write `directory`/{reward_model.safetensors, reward_model.json} atomically (no pickle)."""
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
        config = {
            "format": FORMAT,
            "dimension": self.dimension,
            "feature_size": self.feature_size,
            "metadata": self.metadata,
        }
        with atomic_directory(directory) as staging:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, staging / WEIGHTS_FILE)
            write_json(staging / CONFIG_FILE, config)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RewardModel:
        """Read what `save` wrote; one ValueError naming the file when it is corrupt or inconsistent."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"No reward model at {directory} (expected a folder written by RewardModel.save).")
        fix = f"the reward model in {directory} is damaged; delete the folder and train it again."
        config = read_json(directory / CONFIG_FILE)
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE}: format {config.get('format')!r}, expected {FORMAT!r}; {fix}")
        try:
            tensors = load_file(directory / WEIGHTS_FILE)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{directory / WEIGHTS_FILE} cannot be read ({error}); {fix}") from None
        if sorted(tensors) != sorted(TENSOR_NAMES):
            raise ValueError(
                f"{directory / WEIGHTS_FILE} holds tensors {sorted(tensors)}, expected {sorted(TENSOR_NAMES)}; {fix}"
            )
        size = config.get("feature_size")
        if tensors["weight"].shape != (size,):
            raise ValueError(
                f"{directory}: {CONFIG_FILE} says feature_size {size!r} but the weight has shape "
                f"{tuple(tensors['weight'].shape)}; {fix}"
            )
        try:
            return cls(config.get("dimension"), **tensors, metadata=dict(config.get("metadata") or {}))
        except ValueError as error:
            raise ValueError(f"{directory}: {error} {fix}") from None


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Per-pair −log σ(r_w − r_l) = softplus(−(r_w − r_l)), shape (batch,); inputs (batch,)."""
    return F.softplus(-(chosen_rewards - rejected_rewards))


def fit_bradley_terry(
    chosen: Tensor,
    rejected: Tensor,
    *,
    dimension: str,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    seed: int = 0,
    max_iter: int = 500,
) -> RewardModel:
    """Fit w to pairs of features `chosen`, `rejected` (n, F): full-batch L-BFGS in float64 on
    mean BT loss + (weight_decay / 2)·‖w‖², with μ and s from all 2n train responses and w₀ ~ N(0, 0.01²).
    """
    _check_pairs(chosen, rejected)
    _check_fit_settings(weight_decay, seed)
    chosen, rejected = chosen.detach().cpu().double(), rejected.detach().cpu().double()
    rows = torch.cat([chosen, rejected])  # (2n, F)
    mean, std = rows.mean(0), rows.std(0, correction=0).clamp_min(_MIN_STD)
    difference = (chosen - mean) / std - (rejected - mean) / std  # (n, F): z_w − z_l; b cancels
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(chosen.shape[1], generator=generator, dtype=torch.float64)).requires_grad_()
    optimizer = torch.optim.LBFGS(
        [weight], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def objective() -> Tensor:
        margin = difference @ weight  # (n,): r(y_w) − r(y_l)
        return bradley_terry_loss(margin, torch.zeros_like(margin)).mean() + 0.5 * weight_decay * weight.square().sum()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        loss = float(objective())
    iterations = int(optimizer.state[weight]["n_iter"])
    metadata = {"fit_loss": loss, "fit_iterations": iterations, "weight_decay": weight_decay, "seed": seed}
    return RewardModel(dimension, weight.detach().float(), torch.zeros(()), mean.float(), std.float(), metadata)


# ------------------------------------------------------------------------------------------------------
# Features


@torch.no_grad()
def response_features(
    model: nn.Module,
    prompt_ids: Sequence[list[int]],
    response_ids: Sequence[list[int]],
    *,
    pad_token_id: int,
    batch_size: int = 8,
) -> Tensor:
    """φ of every (prompt, response), shape (n, F = 2·hidden size), float32 on the CPU: the frozen base model's
    final hidden state at the last token and its mean over the response tokens. Right-padded batches of similar
    length; a model with `disable_adapter()` (a PanaceaModel, a peft model) runs with its adapter off; eval mode
    for the call.
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses; pass one response per prompt.")
    if not prompt_ids:
        raise ValueError("No responses to compute features of; pass at least one (prompt, response).")
    if any(len(response) == 0 for response in response_ids):
        raise ValueError("A response has no tokens; every response needs at least its end-of-turn token.")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    sequences = [
        TokenizedPair(str(i), list(p), list(r), [])
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True))
    ]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].prompt_ids) + len(sequences[i].chosen_ids))
    device = next(model.parameters()).device
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # the LM head's output is unused
    result: Tensor | None = None
    was_training = model.training
    model.eval()
    context = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with context:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = collate_pairs([sequences[i] for i in indices], pad_token_id, with_rejected=False).to(device)
                output = model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    output_hidden_states=True,
                    use_cache=False,
                    **extra,
                )
                hidden = output.hidden_states[-1].float()  # (rows, seq, d), after the final norm
                features = _summarise(hidden, batch.attention_mask, batch.response_mask).cpu()  # (rows, 2d)
                if result is None:
                    result = torch.empty(len(sequences), features.shape[1])
                result[indices] = features
    finally:
        model.train(was_training)
    return result


def _summarise(hidden: Tensor, attention_mask: Tensor, response_mask: Tensor) -> Tensor:
    """[h at the last token, mean of h over the response tokens], (rows, 2d); h (rows, seq, d), masks (rows, seq).

    Right padding puts the last token at attention_mask.sum − 1; pad positions are in neither summary.
    """
    last = hidden[torch.arange(len(hidden), device=hidden.device), attention_mask.sum(1) - 1]  # (rows, d)
    weights = response_mask.unsqueeze(-1).to(hidden.dtype)  # (rows, seq, 1)
    mean = (hidden * weights).sum(1) / weights.sum(1)  # (rows, d)
    return torch.cat([last, mean], dim=1)


def pair_features(
    model: nn.Module, pairs: Sequence[TokenizedPair], *, pad_token_id: int, batch_size: int = 8
) -> tuple[Tensor, Tensor]:
    """φ(x, y_w), φ(x, y_l) of every pair, (n, F) each, in one pass over all 2n responses."""
    if not pairs:
        raise ValueError("No pairs to compute features of; pass at least one TokenizedPair.")
    prompts = [pair.prompt_ids for pair in pairs] * 2
    responses = [pair.chosen_ids for pair in pairs] + [pair.rejected_ids for pair in pairs]
    features = response_features(model, prompts, responses, pad_token_id=pad_token_id, batch_size=batch_size)
    return features[: len(pairs)], features[len(pairs) :]


def tokenize_responses(
    tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *, max_length: int, max_prompt_length: int
) -> list[TokenizedPair]:
    """(prompt, response) as training renders and truncates a pair (chat template, keep_end / keep_start).

    Calls `tokenize_pairs` with the response as both answers, so the template and truncation are identical by
    construction; use `chosen_ids`.
    """
    if isinstance(prompts, str) or isinstance(responses, str):
        raise ValueError("prompts and responses must be sequences of strings, not one string.")
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(
            f"Need one response per prompt and at least one of each, got {len(prompts)} prompts and "
            f"{len(responses)} responses."
        )
    for index, text in enumerate([*prompts, *responses]):
        if not isinstance(text, str):
            kind = "prompt" if index < len(prompts) else "response"
            raise ValueError(f"{kind} {index % len(prompts)} is a {type(text).__name__}, not a string.")
    records = [
        PairRecord(f"response-{i}", prompt, response, response, "", f"responses[{i}]")
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True))
    ]
    pairs, _ = tokenize_pairs(records, tokenizer, max_length, max_prompt_length)
    return pairs


# ------------------------------------------------------------------------------------------------------
# Train once, cache, score


def train_reward_model(
    model: nn.Module,
    tokenizer: Any,
    dimension: str,
    train: Sequence[PairSource],
    test: Sequence[PairSource],
    *,
    max_length: int,
    max_prompt_length: int,
    batch_size: int = 8,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    seed: int = 0,
    known_dimensions: Sequence[str] | None = None,
    cache_root: str | os.PathLike | None = None,
) -> RewardModel:
    """The reward model of `dimension`: fitted on the `train` sources' pairs and scored on the `test` ones, or
    read from `cache_root` (default <panacea cache>/reward-models) when these exact inputs were seen before, else from
    the reward-models/ folder of a $PANACEA_CACHE_SEEDS folder (panacea.base_model.cache_seed_dirs); a fitted head
    is written to `cache_root` only.

    `PairSource.max_pairs` caps each source; `known_dimensions` (default: just `dimension`) are the dims the
    files may contain. Truncation as in training; `batch_size` responses per forward (no effect on the result).
    """
    train, test = _as_sources(train, "train"), _as_sources(test, "test")
    _check_fit_settings(weight_decay, seed)
    if not (isinstance(batch_size, int) and batch_size >= 1):  # here too: refuse before any data loads
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    known = list(known_dimensions or [dimension])
    train_pairs, train_stats = load_dimension(train, dimension, known, tokenizer, max_length, max_prompt_length)
    test_pairs, test_stats = load_dimension(test, dimension, known, tokenizer, max_length, max_prompt_length)
    shared = {pair.id for pair in train_pairs} & {pair.id for pair in test_pairs}
    if shared:
        raise ValueError(
            f"Dimension {dimension!r}: {len(shared)} pair(s) are in both train and test (e.g. id "
            f"{sorted(shared)[0]}); test accuracy needs held-out pairs. Check the sources' split."
        )
    settings = {
        "dimension": dimension,
        "feature_kind": FEATURE_KIND,
        "format": FORMAT,
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "weight_decay": weight_decay,
        "seed": seed,
    }
    identity = base_model_identity(model)
    key = reward_cache_key(model, train_pairs, test_pairs, {**settings, "base_model": identity})
    folder = Path(cache_root or cache_dir() / REWARD_MODELS) / f"{dimension}-{key[:32]}"
    for candidate in seeded(folder, REWARD_MODELS):
        cached = _read_cached(candidate, key)
        if cached is not None:
            logger.info("reward model %s: cache hit %s; %s", dimension, candidate, cached.summary())
            return cached
    pad_token_id = _pad_token_id(tokenizer)
    started = time.perf_counter()
    train_chosen, train_rejected = pair_features(model, train_pairs, pad_token_id=pad_token_id, batch_size=batch_size)
    test_chosen, test_rejected = pair_features(model, test_pairs, pad_token_id=pad_token_id, batch_size=batch_size)
    feature_seconds = time.perf_counter() - started
    reward_model = fit_bradley_terry(
        train_chosen, train_rejected, dimension=dimension, weight_decay=weight_decay, seed=seed
    )
    reward_model.metadata.update(
        settings,
        cache_key=key,
        base_model=identity,
        feature_size=reward_model.feature_size,
        train_accuracy=reward_model.accuracy(train_chosen, train_rejected),
        test_accuracy=reward_model.accuracy(test_chosen, test_rejected),
        train_pairs=len(train_pairs),
        test_pairs=len(test_pairs),
        train_sources=[source.describe() for source in train],
        test_sources=[source.describe() for source in test],
        train_truncation=_stats(train_stats),
        test_truncation=_stats(test_stats),
        feature_seconds=round(feature_seconds, 1),
        fit_seconds=round(time.perf_counter() - started - feature_seconds, 2),
    )
    reward_model.save(folder)
    logger.info("reward model %s: trained and cached in %s; %s", dimension, folder, reward_model.summary())
    return reward_model


@torch.no_grad()
def score_responses(
    reward_model: RewardModel,
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
) -> Tensor:
    """r(x, y) of each (prompt, response), shape (n,), truncated with the reward model's own settings.

    `model` must be the base model the reward model was trained on (checked against its metadata).
    """
    scores = score_responses_many({"reward": reward_model}, model, tokenizer, prompts, responses, batch_size=batch_size)
    return scores["reward"]


@torch.no_grad()
def score_responses_many(
    reward_models: Mapping[str, RewardModel],
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
) -> dict[str, Tensor]:
    """Every reward model's r(x, y) of each (prompt, response), {name: (n,)}: `score_responses` for each, with the
    features φ computed once for the reward models that truncate alike (the same base model, max_length and
    max_prompt_length): the same batches, so the same numbers as scoring one model at a time, at a fraction of the
    forward passes."""
    groups: dict[str, list[str]] = {}
    for name, reward_model in reward_models.items():
        meta = reward_model.metadata
        if "max_length" not in meta or "max_prompt_length" not in meta:
            raise ValueError(
                f"{reward_model.dimension} reward model has no max_length/max_prompt_length in its metadata."
            )
        _check_base_model(reward_model, model)
        settings = [meta.get("base_model"), meta["max_length"], meta["max_prompt_length"]]
        groups.setdefault(json.dumps(settings, sort_keys=True, default=str), []).append(name)
    scores = {}
    for names in groups.values():
        meta = reward_models[names[0]].metadata
        sequences = tokenize_responses(
            tokenizer, prompts, responses, max_length=meta["max_length"], max_prompt_length=meta["max_prompt_length"]
        )
        features = response_features(
            model,
            [s.prompt_ids for s in sequences],
            [s.chosen_ids for s in sequences],
            pad_token_id=_pad_token_id(tokenizer),
            batch_size=batch_size,
        )
        scores |= {name: reward_models[name].score(features) for name in names}
    return {name: scores[name] for name in reward_models}


def _check_base_model(reward_model: RewardModel, model: nn.Module) -> None:
    """Refuse to score with a model other than the base model the reward model was trained on (its features)."""
    trained_on = reward_model.metadata.get("base_model")
    if trained_on is None:
        return
    given = base_model_identity(model)
    keys = (set(trained_on) | set(given)) - {"dtype"}  # another dtype shifts features a little; allowed
    different = sorted(key for key in keys if trained_on.get(key) != given.get(key))
    if different:
        raise ValueError(
            f"{reward_model.dimension} reward model was trained on base model "
            f"{trained_on.get('name_or_path')!r}, not on this one ({given.get('name_or_path')!r}; differs in "
            f"{different}); score with the base model it was trained on."
        )


def base_model_identity(model: nn.Module) -> dict[str, Any]:
    """What the features depend on in the model: architecture fingerprint, base parameter count, dtype."""
    base = _hf_model(model)
    parameters = [p for name, p in base.named_parameters() if not _is_adapter(name)]
    return {
        **base_model_fingerprint(base),
        "num_parameters": sum(p.numel() for p in parameters),
        "dtype": str(parameters[0].dtype).removeprefix("torch."),
    }


def reward_cache_key(
    model: nn.Module, train_pairs: Sequence[TokenizedPair], test_pairs: Sequence[TokenizedPair], settings: dict
) -> str:
    """sha256 of `settings`, a strided sample of every base weight, and every train then test pair's token ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    update_with_weights(digest, ((n, p) for n, p in _hf_model(model).named_parameters() if not _is_adapter(n)))
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        digest.update(f"{split}:{len(pairs)}".encode())
        update_with_pairs(digest, pairs)
    return digest.hexdigest()


def _read_cached(folder: Path, key: str) -> RewardModel | None:
    if not folder.exists():
        return None
    try:
        reward_model = RewardModel.load(folder)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("reward model cache %s is unreadable (%s); training it again.", folder, error)
        return None
    if reward_model.metadata.get("cache_key") != key:
        logger.warning("reward model cache %s was written for other inputs; training it again.", folder)
        return None
    return reward_model


def _hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model under an adapter wrapper (PanaceaModel, peft), or `model` itself."""
    if isinstance(model, PanaceaModel):
        return model.base_model
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _is_adapter(name: str) -> bool:
    return any(part in _ADAPTER_KEYS for part in name.split("."))


def _accepts(model: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(_hf_model(model).forward).parameters


def _pad_token_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("The tokenizer has neither a pad nor an eos token; set tokenizer.pad_token.")


def _as_sources(sources: Any, name: str) -> list[PairSource]:
    sources = [sources] if isinstance(sources, PairSource) else list(sources or [])
    if not sources or not all(isinstance(source, PairSource) for source in sources):
        raise ValueError(f"{name} must be a PairSource or a non-empty list of them, got {sources!r}.")
    return sources


def _check_pairs(chosen: Tensor, rejected: Tensor) -> None:
    if chosen.ndim != 2 or chosen.shape != rejected.shape or len(chosen) == 0:
        raise ValueError(
            "chosen and rejected features must have the same shape (n, F) with n >= 1, got "
            f"{tuple(chosen.shape)} and {tuple(rejected.shape)}."
        )


def _check_fit_settings(weight_decay: float, seed: int) -> None:
    if isinstance(weight_decay, bool) or not (
        isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")


def _stats(stats: TruncationStats) -> dict[str, int]:
    return {
        "pairs": stats.pairs,
        "truncated_prompts": stats.truncated_prompts,
        "truncated_responses": stats.truncated_responses,
        "lost_length_difference": stats.lost_length_difference,
    }
