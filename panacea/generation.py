"""Text in, text out: chat-formatted greedy generation at a given preference, one prompt or a whole grid.

`generate_text` answers one prompt at one λ. `generate_grid` answers many prompts at many λs in
*mixed-preference* batches: every row carries its own λ (the adapter reads a (batch, m) preference), so
one `generate` call covers several grid points and a grid costs about what one batch of its size costs.
`sample_responses` samples token ids for on-policy RL: one decode loop over rows that each carry their own λ
and their own random generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from panacea.adapters import PanaceaModel, SoupModel
from panacea.preferences import PreferenceLike, validate_preference
from panacea.serving.sampling import SamplingParams, sample_tokens


@torch.no_grad()
def generate_text(
    model: PanaceaModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    preference: PreferenceLike,
    max_new_tokens: int = 64,
) -> str:
    """Answer `prompt` (wrapped in the tokenizer's chat template when it has one) greedily at preference λ.

    λ is a vector, or {name: weight} when the adapter has preference names.
    """
    inputs = chat_inputs(tokenizer, [prompt]).to(model.device)
    output = model.generate(
        **inputs,
        preference=preference,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@torch.no_grad()
def generate_grid(
    model: PanaceaModel | SoupModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    preferences: PreferenceLike,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    mixed: bool = True,
    return_finished: bool = False,
) -> list[list[str]] | tuple[list[list[str]], list[list[bool]]]:
    """Greedy answers to every prompt at every λ: `answers[point][prompt]`, preferences (n, m): a tensor, array or
    nested list, or (with the adapter's `preference_names`) a list of {name: weight} mappings; each row on the simplex.

    Prompts are sorted by length and cut into chunks of ⌈batch_size / n⌉; with `mixed` (the default) one
    `generate` call answers a chunk at all n λs at once (≈ batch_size rows, each with its own λ). With
    `mixed=False` the same chunks run one λ after another — the same rows, padded the same way, so the
    greedy answers are the same; `benchmarks/front_generation.py` times the two. A rewarded soup serves one λ per
    call (SoupModel.generate), so it always runs one λ after another. With `return_finished`, also
    `finished[point][prompt]`: whether the answer ended with an end-of-sequence token rather than being cut off
    at `max_new_tokens`.
    """
    preferences = validate_preference(preferences, model.num_preferences, names=model.preference_names)
    if preferences.ndim != 2:
        raise ValueError(f"preferences must be a non-empty (points, m) tensor, got shape {tuple(preferences.shape)}.")
    points = len(preferences)
    answers: list[list[str]] = [[""] * len(prompts) for _ in range(points)]
    finished: list[list[bool]] = [[False] * len(prompts) for _ in range(points)]
    stops = torch.tensor(sorted(eos_token_ids(model, tokenizer)), dtype=torch.long)
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    chunk_size = max(1, -(-batch_size // points))
    together = mixed and not isinstance(model, SoupModel)  # a soup serves one λ per call
    groups = [list(range(points))] if together else [[point] for point in range(points)]
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        inputs = chat_inputs(tokenizer, [prompts[index] for index in chunk]).to(model.device)
        for group in groups:
            rows = preferences[group].repeat_interleave(len(chunk), dim=0)  # (len(group) · len(chunk), m)
            output = model.generate(
                input_ids=inputs["input_ids"].repeat(len(group), 1),
                attention_mask=inputs["attention_mask"].repeat(len(group), 1),
                preference=rows,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            generated = output[:, inputs["input_ids"].shape[1] :]  # (rows, ≤ max_new_tokens)
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            ended = torch.isin(generated.cpu(), stops).any(1).tolist()  # no EOS: cut off at max_new_tokens
            for slot, (text, stopped) in enumerate(zip(texts, ended, strict=True)):
                point, prompt = group[slot // len(chunk)], chunk[slot % len(chunk)]
                answers[point][prompt], finished[point][prompt] = text.strip(), stopped
    return (answers, finished) if return_finished else answers


def chat_inputs(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]):
    """User messages as left-padded model inputs, in the chat template when the tokenizer has one."""
    if tokenizer.chat_template:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            for prompt in prompts
        ]
    else:
        texts = list(prompts)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=tokenizer.chat_template is None)
    finally:
        tokenizer.padding_side = padding_side


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    preferences: Tensor,
    generators: Sequence[torch.Generator],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_ids: Collection[int],
    pad_token_id: int,
) -> list[list[int]]:
    """Sample one response per row: token ids, ending with the row's EOS token when it stopped before the limit.

    prompt_ids: n prompts (ids, unpadded); preferences (n, m): each row's λ; generators: one per row. The rows are
    left-padded into one batch with one KV cache, each with its own position ids and its padding masked out, and
    every row samples with its own generator (`panacea.serving.sampling.sample_tokens`), so a row's tokens depend
    on its prompt, λ and generator, not on its batch-mates; a finished row leaves the batch (and the cache).
    `model`: a PanaceaModel, or any wrapper whose `base_model` is the Hugging Face causal LM and whose forward
    takes `preference=` (a plain LoRA ignores it). The model's train/eval mode is left as it is.
    """
    n = len(prompt_ids)
    if preferences.ndim != 2 or preferences.shape[0] != n or len(generators) != n or n == 0:
        raise ValueError(
            f"sample_responses needs n >= 1 prompts with preferences (n, m) and n generators, got {n} prompts, "
            f"preferences {tuple(preferences.shape)} and {len(generators)} generators."
        )
    settings = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    forward, device = cached_forward(model), model.device
    length = max(len(prompt) for prompt in prompt_ids)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):  # left padding: every row's last token is in the last column
        input_ids[row, length - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        attention_mask[row, length - len(prompt) :] = 1
    input_ids, attention_mask, preferences = input_ids.to(device), attention_mask.to(device), preferences.to(device)
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (n, length): each real token's index in its row
    tokens = sample_tokens(
        forward(input_ids, attention_mask, positions, cache, preferences), [settings] * n, generators
    )
    rows, next_position = list(range(n)), attention_mask.sum(-1)  # the prompt of each batch row; (rows,)
    responses: list[list[int]] = [[] for _ in range(n)]
    eos = frozenset(eos_token_ids)
    while True:
        for row, token in zip(rows, tokens.tolist(), strict=True):
            responses[row].append(token)
        keep = [slot for slot, row in enumerate(rows) if responses[row][-1] not in eos]
        keep = [slot for slot in keep if len(responses[rows[slot]]) < max_new_tokens]
        if not keep:
            return responses
        if len(keep) < len(rows):  # finished rows leave the batch and the cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention_mask, next_position = attention_mask[index], next_position[index]
            tokens, preferences, rows = tokens[index], preferences[index], [rows[slot] for slot in keep]
        attention_mask = F.pad(attention_mask, (0, 1), value=1)  # the pending token's column
        logits = forward(tokens[:, None], attention_mask, next_position[:, None], cache, preferences)
        next_position = next_position + 1
        tokens = sample_tokens(logits, [settings] * len(rows), [generators[row] for row in rows])


def eos_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The tokens that end a response: the generation config's EOS ids (as `generate` uses), else the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = tokenizer.eos_token_id if ids is None else ids
    return frozenset() if ids is None else frozenset([ids] if isinstance(ids, int) else ids)


def cached_forward(model: nn.Module):
    """forward(input_ids, attention_mask, position_ids, cache, preference) -> the logits (batch, vocab) at each row's
    last position, appending to `cache` (transformers' argument is `cache` from 5.x, `past_key_values` before)."""
    parameters = inspect.signature(model.base_model.forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache, preference: Tensor) -> Tensor:
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            preference=preference,
            use_cache=True,
            **{cache_argument: cache},
            **last_only,
        )
        return output.logits[:, -1]

    return forward
