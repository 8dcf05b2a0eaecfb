"""Batches of pairs and their summed response log-probs, with the LM head run on response tokens only.

`collate_pairs` + `response_log_probs` serve training: one row per response, gradients flow. `pair_log_probs`
serves scoring: every pair at every λ of a grid in one call, without gradients, the prompt run once for both of
its responses, in batches of about `token_budget` padded tokens of rows of similar length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panacea.data import TokenizedPair

DEFAULT_TOKEN_BUDGET = 2048  # padded tokens per forward of `pair_log_probs`: the fastest of 1024–4096 measured here
PACKABLE_ATTENTION = ("sdpa", "eager")  # transformers attention implementations that take a custom 4-D mask as is


@dataclass
class PairBatch:
    """Prompt + response rows, right-padded: chosen responses first, then (for DPO) the rejected ones.

    input_ids, attention_mask: (rows, seq); response_mask: (rows, seq), True on response tokens.
    rows = batch for SFT (chosen only) and 2·batch for DPO (chosen rows, then rejected rows).
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    num_pairs: int

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device), self.num_pairs
        )

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens (prompt + response) of all rows."""
        return int(self.attention_mask.sum())

    @property
    def response_tokens(self) -> Tensor:
        """Response tokens per row, (rows,)."""
        return self.response_mask.sum(1)


def collate_pairs(pairs: Sequence[TokenizedPair], pad_token_id: int, with_rejected: bool = True) -> PairBatch:
    """Pad `pairs` into one batch: rows [prompt + chosen …, prompt + rejected …] (rejected rows only if asked)."""
    responses = [pair.chosen_ids for pair in pairs]
    if with_rejected:
        responses += [pair.rejected_ids for pair in pairs]
    prompts = [pair.prompt_ids for pair in pairs] * (2 if with_rejected else 1)
    seq = max(len(prompt) + len(response) for prompt, response in zip(prompts, responses, strict=True))
    input_ids = torch.full((len(prompts), seq), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), seq), dtype=torch.long)
    response_mask = torch.zeros((len(prompts), seq), dtype=torch.bool)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        length = len(prompt) + len(response)
        input_ids[row, :length] = torch.tensor(prompt + response)
        attention_mask[row, :length] = 1
        response_mask[row, len(prompt) : length] = True
    return PairBatch(input_ids, attention_mask, response_mask, len(pairs))


def response_log_probs(model: nn.Module, batch: PairBatch, **forward_kwargs) -> Tensor:
    """Σ_t log π(y_t | x, y_<t) over each row's response tokens, shape (rows,), in fp32.

    The model runs its own forward (so DDP hooks, autocast and the Panacea preference apply), but
    the output head sees only the hidden states that predict response tokens: a (1, N, hidden)
    selection instead of (rows, seq, hidden), so prompt and padding positions never reach the
    vocabulary projection. Model-specific logit post-processing (soft-capping, scaling) still runs.
    `forward_kwargs` go to the model's forward (e.g. `preference=`).
    """
    predicts_response = batch.response_mask[:, 1:]  # hidden state t predicts token t + 1: (rows, seq − 1)
    with _output_head_sees(model, *predicts_response.nonzero(as_tuple=True)):
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **forward_kwargs
        ).logits[0]  # (N, vocab)
    targets = batch.input_ids[:, 1:][predicts_response]  # (N,)
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")  # log-softmax in fp32
    rows = predicts_response.nonzero()[:, 0]  # (N,) the row of each response token
    return torch.zeros(batch.input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps
    )


# --- Scoring: every pair at every λ, the prompt shared by both responses -------------------------------------


def pair_log_probs(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    preferences: Tensor | None = None,
    *,
    pad_token_id: int,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    reference: bool = False,
    pack: bool | None = None,
) -> Tensor:
    """Σ_t log π(y_t | x, y_<t) of chosen and rejected of every pair at every λ: (points, pairs, 2), fp32, no gradient.

    preferences: (points, m), one λ per grid point; every row of a batch carries its own (`preference=` of shape
        (rows, m)), so a batch mixes λs and a pair's λs, of equal length, sit side by side without padding. With one
        point the model gets that λ, (m,): a `SoupModel` (one λ per call) takes (1, m). None for a model without
        `preference=` (a plain Hugging Face model) or with `reference=True`; then points = 1.
    reference: run under the model's `disable_adapter()`: the frozen base model, DPO's π_ref.
    pack: one row [prompt, chosen, rejected] per (pair, λ), with a 4-D mask (the rejected tokens see the prompt and
        themselves, never the chosen ones) and positions restarting after the prompt, so the prompt runs once for
        both responses. None: pack when the model's attention takes a 4-D mask as is (transformers' sdpa, eager)
        and has no sliding window; False: one row per response, as `collate_pairs` (e.g. for flash attention).
    token_budget: rows, sorted by their own length, go into batches of rows × longest row ≤ token_budget (a longer
        row runs alone). The output head sees the scored positions only, (1, N ≤ budget, vocab) logits at most.
    The model runs in eval mode (its mode is restored after); `autocast` wraps each forward.
    """
    if preferences is not None and (preferences.ndim != 2 or len(preferences) == 0):
        raise ValueError(f"preferences must have shape (points, m) with points ≥ 1, got {tuple(preferences.shape)}.")
    if reference and preferences is not None:
        raise ValueError("reference=True runs the base model, which takes no preference: pass preferences=None.")
    if not (isinstance(token_budget, int) and token_budget > 0):
        raise ValueError(f"token_budget must be a positive integer, got {token_budget!r}.")
    points = 1 if preferences is None else len(preferences)
    pack = _takes_4d_mask(model) if pack is None else pack
    if preferences is not None:
        preferences = preferences.to(model.device)
    sums = torch.zeros(points * len(pairs) * 2, dtype=torch.float64)  # (point, pair, side), flat; fp64: see below
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter() if reference else contextlib.nullcontext(), torch.no_grad():
            for rows in _budget_batches(_scoring_rows(pairs, points, pack), token_budget):
                batch = _collate_rows(rows, pairs, pad_token_id, _mask_dtype(model) if pack else None).to(model.device)
                kwargs = {}
                if preferences is not None:  # one point: its λ for the whole batch, which the adapter applies at once
                    kwargs["preference"] = preferences[0] if points == 1 else preferences[[row.point for row in rows]]
                with autocast():
                    token_logps = _scored_log_probs(model, batch, **kwargs)  # (N,)
                # Summed in fp64, so the sum adds no rounding of its own (an fp32 sum near −800 steps by 6e-5).
                sums.index_add_(0, batch.slots, token_logps.double().cpu())
    finally:
        model.train(was_training)
    return sums.float().view(points, len(pairs), 2)


class _Row(NamedTuple):
    """One row of a scoring batch: pair `pair` at grid point `point`, its prompt then the responses `sides`."""

    pair: int
    point: int
    sides: tuple[int, ...]  # 0 chosen, 1 rejected: (0, 1) packed, (0,) or (1,) one response per row
    length: int  # tokens, without padding


@dataclass
class _ScoringBatch:
    """Rows of `_Row`s, right-padded, and the N scored tokens: which hidden state predicts each, and its sum slot."""

    input_ids: Tensor  # (rows, seq)
    attention_mask: Tensor  # (rows, seq) with one response per row; packed: (rows, 1, seq, seq), as attention takes it
    position_ids: Tensor | None  # (rows, seq) for packed rows, else None (0, 1, … as usual)
    predictor_rows: Tensor  # (N,) the row and column of the hidden state that predicts each scored token
    predictor_columns: Tensor  # (N,)
    targets: Tensor  # (N,) the scored tokens
    slots: Tensor  # (N,) the flat index (point · pairs + pair) · 2 + side each token's log-prob is summed into

    def to(self, device: torch.device | str) -> _ScoringBatch:
        position_ids = None if self.position_ids is None else self.position_ids.to(device)
        return _ScoringBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            position_ids,
            self.predictor_rows.to(device),
            self.predictor_columns.to(device),
            self.targets.to(device),
            self.slots,
        )


def _scoring_rows(pairs: Sequence[TokenizedPair], points: int, pack: bool) -> list[_Row]:
    """Every (pair, point) as one packed row, or as a chosen row and a rejected row; longest first."""
    rows = []
    for index, pair in enumerate(pairs):
        prompt = len(pair.prompt_ids)
        if pack:
            layouts = [((0, 1), prompt + len(pair.chosen_ids) + len(pair.rejected_ids))]
        else:  # chosen and rejected rows are sorted apart, each by its own length: less padding than by the pair's
            layouts = [((0,), prompt + len(pair.chosen_ids)), ((1,), prompt + len(pair.rejected_ids))]
        rows += [_Row(index, point, sides, length) for point in range(points) for sides, length in layouts]
    return sorted(rows, key=lambda row: -row.length)  # stable: a pair's λs stay side by side


def _budget_batches(rows: Sequence[_Row], token_budget: int) -> Iterator[list[_Row]]:
    """Consecutive runs of `rows` (longest first) with len(run) × its first row's length ≤ token_budget, ≥ 1 row."""
    batch: list[_Row] = []
    for row in rows:
        if batch and (len(batch) + 1) * batch[0].length > token_budget:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def _collate_rows(
    rows: Sequence[_Row], pairs: Sequence[TokenizedPair], pad_token_id: int, mask_dtype: torch.dtype | None
) -> _ScoringBatch:
    """Pad `rows`; `mask_dtype` None: a 2-D padding mask (one response per row), else the packed rows' 4-D mask.

    Response token j sits at column start + j and position len(prompt) + j. The hidden state that predicts it is
    the previous column's, except for j = 0, which follows the prompt: the prompt's last column, for either
    response (with an empty prompt the first token has no predictor and is not scored, as in `collate_pairs`).
    """
    seq = max(row.length for row in rows)
    input_ids = torch.full((len(rows), seq), pad_token_id, dtype=torch.long)
    segments = torch.full((len(rows), seq), -1, dtype=torch.long)  # −1 padding, 0 prompt, k + 1 the k-th response
    positions = torch.zeros((len(rows), seq), dtype=torch.long)
    predictor_rows, predictor_columns, targets, slots = [], [], [], []
    num_pairs = len(pairs)
    for index, row in enumerate(rows):
        pair = pairs[row.pair]
        prompt = len(pair.prompt_ids)
        ids, row_segments, row_positions = list(pair.prompt_ids), [0] * prompt, list(range(prompt))
        for k, side in enumerate(row.sides):
            response = pair.rejected_ids if side else pair.chosen_ids
            start = len(ids)
            first = 0 if prompt else 1
            scored = max(len(response) - first, 0)
            predictor_columns += [prompt - 1, *range(start, start + len(response) - 1)][first : first + scored]
            targets += response[first:]
            predictor_rows += [index] * scored
            slots += [(row.point * num_pairs + row.pair) * 2 + side] * scored
            ids += response
            row_segments += [k + 1] * len(response)
            row_positions += range(prompt, prompt + len(response))
        input_ids[index, : len(ids)] = torch.tensor(ids)
        segments[index, : len(ids)] = torch.tensor(row_segments)
        positions[index, : len(ids)] = torch.tensor(row_positions)
    if mask_dtype is None:
        attention_mask, position_ids = (segments >= 0).long(), None
    else:
        attention_mask, position_ids = _packed_attention_mask(segments, mask_dtype), positions
    return _ScoringBatch(
        input_ids,
        attention_mask,
        position_ids,
        torch.tensor(predictor_rows, dtype=torch.long),  # long even when empty (a batch without scored tokens)
        torch.tensor(predictor_columns, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(slots, dtype=torch.long),
    )


def _packed_attention_mask(segments: Tensor, dtype: torch.dtype) -> Tensor:
    """(rows, 1, seq, seq): query q sees key k ≤ q of the prompt or of q's own segment; bool, or additive for eager.

    segments (rows, seq): 0 prompt, k + 1 the k-th response, −1 padding. Padding (at the end) sees the prompt and
    itself, so no query row is empty (an all-masked row would put NaN into the next layer's padding keys).
    """
    seq = segments.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()  # (query, key)
    same = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])  # (rows, query, key)
    allowed = (causal & same).unsqueeze(1)
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def _scored_log_probs(model: nn.Module, batch: _ScoringBatch, **forward_kwargs) -> Tensor:
    """log π of each scored token, (N,): the model's own forward, the output head on the predicting positions only."""
    extra = {} if batch.position_ids is None else {"position_ids": batch.position_ids}
    with _output_head_sees(model, batch.predictor_rows, batch.predictor_columns):
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **extra, **forward_kwargs
        ).logits[0]  # (N, vocab)
    return -F.cross_entropy(logits.float(), batch.targets, reduction="none")  # log-softmax in fp32


def _takes_4d_mask(model: nn.Module) -> bool:
    """Whether the model's attention takes a custom 4-D mask as given (transformers' sdpa and eager do) and the mask
    is the whole story: a sliding window (Mistral, Qwen2 with `use_sliding_window`, Gemma's sliding layers) is not in
    the packed mask, so such a model is scored one row per response."""
    config = getattr(model, "config", None)
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    sliding = sliding or "sliding_attention" in (getattr(config, "layer_types", None) or ())
    return getattr(config, "_attn_implementation", None) in PACKABLE_ATTENTION and not sliding


def _mask_dtype(model: nn.Module) -> torch.dtype:
    """sdpa takes a boolean mask in any precision; eager adds the mask to its scores, so it needs an additive one."""
    if model.config._attn_implementation == "sdpa":
        return torch.bool
    return model.get_input_embeddings().weight.dtype


@contextmanager
def _output_head_sees(model: nn.Module, rows: Tensor, columns: Tensor) -> Iterator[None]:
    """Feed the output head only the hidden states at (`rows`, `columns`), (N,) each, as a (1, N, hidden) batch."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings; a causal LM is needed.")

    def select(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]  # (rows, seq, hidden)
        return (hidden[rows, columns].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()
