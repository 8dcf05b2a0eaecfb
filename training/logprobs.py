"""Batches of pairs and their summed response log-probs, with the LM head run on response tokens only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panacea.data import TokenizedPair


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
    with _output_head_sees(model, predicts_response):
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **forward_kwargs
        ).logits[0]  # (N, vocab)
    targets = batch.input_ids[:, 1:][predicts_response]  # (N,)
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")  # log-softmax in fp32
    rows = predicts_response.nonzero()[:, 0]  # (N,) the row of each response token
    return torch.zeros(batch.input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps
    )


@contextmanager
def _output_head_sees(model: nn.Module, positions: Tensor) -> Iterator[None]:
    """Feed the output head only `hidden[:, :-1][positions]`, as a (1, N, hidden) batch."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings; a causal LM is needed.")

    def select(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]  # (rows, seq, hidden)
        return (hidden[:, :-1][positions].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()
