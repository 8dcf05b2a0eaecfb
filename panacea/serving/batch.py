"""Rows that decode together: one left-padded KV cache, and per row a pending token, its position and a λ.

Continuous batching the way text-generation-inference's first engine did it (`CausalLMBatch.concatenate` and
`filter`): rows of different lengths share one cache whose columns are aligned on the right. The columns before
a row's first token hold zeros and are masked out by `attention_mask`, and every row keeps its own position ids,
so each row computes what it would compute alone. Rows join by concatenation (the shorter cache is left-padded
to the longer) and leave by selection, after which columns that are padding in every remaining row are cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def left_padded(prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask, both (batch, longest prompt), each prompt pushed to the right end."""
    length = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, length - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def positions_of(attention_mask: Tensor) -> Tensor:
    """Position ids (batch, seq) of left-padded rows: each real token's index within its row (padding: 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


@dataclass
class DecodeBatch:
    """The decode state of the running rows; `cache` holds keys and values (batch, heads, kv, head_dim) per layer."""

    cache: DynamicCache
    attention_mask: Tensor  # (batch, kv + 1): the cache's columns, then the pending token's; 1 where a row has a token
    tokens: Tensor  # (batch,): the pending token of each row, sampled but not yet fed to the model
    positions: Tensor  # (batch,): its position, i.e. how many tokens of its row come before it
    preference: Tensor  # (batch, m): each row's λ

    @classmethod
    def after_prefill(cls, cache: DynamicCache, prompt_mask: Tensor, tokens: Tensor, preference: Tensor) -> DecodeBatch:
        """The batch right after a prefill over left-padded prompts, `prompt_mask` (batch, seq), with first tokens."""
        if not cache.layers or any(layer.keys is None or layer.keys.ndim != 4 for layer in cache.layers):
            raise ValueError(
                "panacea serve needs every layer's keys in the cache as (batch, heads, seq, head_dim) after a prefill; "
                "this model leaves some layers empty (shared key/value layers are not supported)."
            )
        return cls(cache, F.pad(prompt_mask, (0, 1), value=1), tokens, prompt_mask.sum(-1), preference)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def inputs(self) -> dict[str, Tensor]:
        """The next decode step's model inputs: one token per row at its own position."""
        return {
            "input_ids": self.tokens[:, None],
            "attention_mask": self.attention_mask,
            "position_ids": self.positions[:, None],
        }

    def advance(self, tokens: Tensor) -> None:
        """After a decode step (the cache grew by the pending tokens' column): `tokens` (batch,) are pending now."""
        self.attention_mask = F.pad(self.attention_mask, (0, 1), value=1)
        self.positions = self.positions + 1
        self.tokens = tokens

    def extend(self, other: DecodeBatch) -> None:
        """Append `other`'s rows after this batch's; the one with fewer columns is left-padded to the other."""
        length = max(self.attention_mask.shape[1], other.attention_mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, length - 1, -2), _left_pad(theirs.keys, length - 1, -2)])
            mine.values = torch.cat([_left_pad(mine.values, length - 1, -2), _left_pad(theirs.values, length - 1, -2)])
        self.attention_mask = torch.cat(
            [_left_pad(self.attention_mask, length, -1), _left_pad(other.attention_mask, length, -1)]
        )
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.positions = torch.cat([self.positions, other.positions])
        self.preference = torch.cat([self.preference, other.preference])

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order), then cut the leading columns that are padding in every kept row."""
        index = torch.tensor(rows, dtype=torch.long, device=self.tokens.device)
        mask = self.attention_mask[index]
        start = int(mask.argmax(-1).min())  # the earliest first token of any kept row (argmax: the first 1)
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self.attention_mask = mask[:, start:]
        self.tokens, self.positions, self.preference = self.tokens[index], self.positions[index], self.preference[index]


def new_cache(config) -> DynamicCache:
    """An empty cache for a model with `config`; ValueError if its layers cannot be padded and joined row-wise."""
    cache = DynamicCache(config=config)
    kinds = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if kinds:
        raise ValueError(
            f"panacea serve batches the key/value cache of full-attention models (transformers DynamicLayer in "
            f"every layer); this model's cache also has {kinds} (sliding windows or linear attention)."
        )
    return cache


def _left_pad(tensor: Tensor, length: int, dim: int) -> Tensor:
    """`tensor` with zeros prepended along `dim` (negative) up to `length`."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    return F.pad(tensor, (0, 0) * (-dim - 1) + (missing, 0))
