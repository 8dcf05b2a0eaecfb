"""Rows that decode together: one left-padded KV cache, and per row a pending token, its position and a λ.

Continuous batching the way text-generation-inference's first engine did it (`CausalLMBatch.concatenate` and
`filter`): rows of different lengths share one cache whose columns are aligned on the right. The columns before
a row's first token are masked out by `attention_mask`, and every row keeps its own position ids, so each row
computes what it would compute alone.

Unlike TGI's tensors, and transformers' `DynamicLayer` (which concatenates the whole cache with each new column),
the cache lives in buffers with room to spare (`SlabLayer`), so no step copies it: a decode step writes its one new
column in place, a joining row is written into free rows (and free columns on the left, if its history is the
longest), and a leaving row's slot is filled by the last row's. Leading columns that are padding in every row left
are cut by moving where the live window starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_SPARE_COLUMNS = 64  # the least room for new columns a buffer gets when it grows (then: as many as it holds)
PADDING_LIMIT = 0.25  # the most of a shared prefill's tokens that may be padding (our choice; docs/serving.md)


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


def prefill_group(lengths: Sequence[int], budget: int) -> list[int]:
    """Which waiting prompts to prefill together next, as sorted indices into `lengths` (the prompts, oldest first).

    The oldest always goes (so none waits forever), then the others nearest its length, each only if the group's
    padded tokens (rows × longest) stay within `budget` and at most PADDING_LIMIT of them are padding: a padded
    token costs as much as a real one, while a pass of fewer rows costs somewhat more per token (docs/serving.md).
    """
    group, longest, real = [0], lengths[0], lengths[0]
    for index in sorted(range(1, len(lengths)), key=lambda index: (abs(lengths[index] - lengths[0]), index)):
        padded = (len(group) + 1) * max(longest, lengths[index])
        if padded <= budget and padded - real - lengths[index] <= PADDING_LIMIT * padded:
            group.append(index)
            longest, real = max(longest, lengths[index]), real + lengths[index]
    return sorted(group)


class SlabLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into buffers with room to spare.

    The buffers are (row capacity, heads, column capacity, head_dim); `keys` and `values` are their live window,
    rows [0, rows) and columns [start, end). `update` writes new columns at `end`, in place. Columns before `start`
    are free for a joining row whose history is longer than the window; they, and the rows and columns outside a
    row's own tokens, hold stale finite numbers that the attention mask hides. A buffer that is full is copied into
    one twice the size, so each column is copied O(1) times on average.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows = self.start = self.end = 0
        self._key_buffer: Tensor | None = None
        self._value_buffer: Tensor | None = None

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        batch, heads, _, dim = key_states.shape
        self.device = key_states.device
        self._key_buffer = key_states.new_zeros(batch, heads, 0, dim)
        self._value_buffer = value_states.new_zeros(batch, heads, 0, value_states.shape[-1])
        self.rows, self.is_initialized = batch, True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append `key_states`, `value_states` (rows, heads, new, head_dim) after the window; the window, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.end + new > self._key_buffer.shape[2]:
            live = self.end - self.start
            self._reallocate(self._key_buffer.shape[0], left=0, right=max(new, live, MIN_SPARE_COLUMNS))
        self._key_buffer[: self.rows, :, self.end : self.end + new] = key_states
        self._value_buffer[: self.rows, :, self.end : self.end + new] = value_states
        self.end += new
        self._refresh()
        return self.keys, self.values

    def append_rows(self, keys: Tensor, values: Tensor, max_rows: int | None = None) -> None:
        """Add rows whose cache is `keys`, `values` (batch, heads, seq, head_dim), right-aligned with the window's.

        A buffer without room for them grows to twice its rows, but not past `max_rows` (the most the batch will hold).
        """
        rows, length = self.rows + keys.shape[0], keys.shape[2]
        capacity = self._key_buffer.shape[0]
        if rows > capacity or length > self.end:  # no free rows, or no free columns on the left: a bigger buffer
            live = self.end - self.start
            room = self._key_buffer.shape[2] - self.end
            grown = max(rows, min(2 * capacity, max_rows or 2 * capacity))
            self._reallocate(grown, left=max(0, length - live), right=max(room, MIN_SPARE_COLUMNS))
        self._key_buffer[self.rows : rows, :, self.end - length : self.end] = keys
        self._value_buffer[self.rows : rows, :, self.end - length : self.end] = values
        self.rows, self.start = rows, min(self.start, self.end - length)
        self._refresh()

    def move_rows(self, sources: Sequence[int], targets: Sequence[int], rows: int, cut: int) -> None:
        """Copy rows `sources` into `targets` (the window's columns only), keep the first `rows` rows, and cut the
        window's first `cut` columns."""
        if sources:
            source = torch.tensor(sources, device=self._key_buffer.device)
            target = torch.tensor(targets, device=self._key_buffer.device)
            window = slice(self.start, self.end)
            self._key_buffer[target, :, window] = self._key_buffer[source, :, window]
            self._value_buffer[target, :, window] = self._value_buffer[source, :, window]
        self.rows, self.start = rows, self.start + cut
        self._refresh()

    def _reallocate(self, row_capacity: int, left: int, right: int) -> None:
        """New buffers of `row_capacity` rows and left + window + right columns, the window copied after `left`."""
        live = self.end - self.start
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            rows, heads, _, dim = old.shape
            buffer = old.new_zeros(row_capacity, heads, left + live + right, dim)
            buffer[: self.rows, :, left : left + live] = old[: self.rows, :, self.start : self.end]
            setattr(self, name, buffer)
        self.start, self.end = left, left + live

    def _refresh(self) -> None:
        self.keys = self._key_buffer[: self.rows, :, self.start : self.end]
        self.values = self._value_buffer[: self.rows, :, self.start : self.end]

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.rows = self.start = self.end = 0
        super().reset()


@dataclass
class DecodeBatch:
    """The decode state of the running rows; `cache` holds keys and values (batch, heads, kv, head_dim) per layer."""

    cache: DynamicCache  # every layer a SlabLayer (new_cache)
    attention_mask: Tensor  # (batch, kv + 1): the cache's columns, then the pending token's; 1 where a row has a token
    tokens: Tensor  # (batch,): the pending token of each row, sampled but not yet fed to the model
    positions: Tensor  # (batch,): its position, i.e. how many tokens of its row come before it
    preference: Tensor  # (batch, m): each row's λ

    @classmethod
    def after_prefill(cls, cache: DynamicCache, prompt_mask: Tensor, tokens: Tensor, preference: Tensor) -> DecodeBatch:
        """The batch right after a prefill over left-padded prompts, `prompt_mask` (batch, seq), with first tokens."""
        if not all(isinstance(layer, SlabLayer) for layer in cache.layers):
            raise ValueError("a DecodeBatch needs a cache from panacea.serving.batch.new_cache (SlabLayers).")
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

    def extend(self, other: DecodeBatch, max_rows: int | None = None) -> None:
        """Append `other`'s rows after this batch's, right-aligned; only `other`'s cache is copied. `max_rows`: the
        most rows this batch will hold, which its cache's buffers need not exceed."""
        length = max(self.attention_mask.shape[1], other.attention_mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.append_rows(theirs.keys, theirs.values, max_rows)
        self.attention_mask = torch.cat(
            [_left_pad(self.attention_mask, length, -1), _left_pad(other.attention_mask, length, -1)]
        )
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.positions = torch.cat([self.positions, other.positions])
        self.preference = torch.cat([self.preference, other.preference])

    def drop(self, rows: Sequence[int]) -> list[int]:
        """Remove `rows` (not all of them) and cut the leading columns that are padding in every row left.

        The last rows move into the freed slots, so only their caches are copied; returns, for each row in its new
        order, its index before.
        """
        gone, kept = set(rows), len(self) - len(set(rows))
        holes = [index for index in sorted(gone) if index < kept]
        movers = [index for index in range(kept, len(self)) if index not in gone]
        order = list(range(kept))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        index = torch.tensor(order, dtype=torch.long, device=self.tokens.device)
        mask = self.attention_mask[index]
        cut = int(mask.argmax(-1).min())  # the earliest first token of any kept row (argmax: the first 1)
        for layer in self.cache.layers:
            layer.move_rows(movers, holes, kept, cut)
        self.attention_mask = mask[:, cut:]
        self.tokens, self.positions, self.preference = self.tokens[index], self.positions[index], self.preference[index]
        return order


def new_cache(config) -> DynamicCache:
    """An empty cache of SlabLayers for a model with `config`; ValueError if its layers are not all full attention."""
    cache = DynamicCache(config=config)
    kinds = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if kinds:
        raise ValueError(
            f"panacea serve batches the key/value cache of full-attention models (transformers DynamicLayer in "
            f"every layer); this model's cache also has {kinds} (sliding windows or linear attention)."
        )
    cache.layers = [SlabLayer() for _ in cache.layers]
    if cache.layer_class_to_replicate is not None:  # a config that does not say its layers: they come one by one
        cache.layer_class_to_replicate = SlabLayer
    return cache


def _left_pad(tensor: Tensor, length: int, dim: int) -> Tensor:
    """`tensor` with zeros prepended along `dim` (negative) up to `length`."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    return F.pad(tensor, (0, 0) * (-dim - 1) + (missing, 0))
