"""Text in, text out: chat-formatted greedy generation at a given preference, one prompt or a whole grid.

`generate_text` answers one prompt at one λ. `generate_grid` answers many prompts at many λs in
*mixed-preference* batches: every row carries its own λ (the adapter reads a (batch, m) preference), so
one `generate` call covers several grid points and a grid costs about what one batch of its size costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from panacea.adapters import PanaceaModel
from panacea.preferences import PreferenceLike


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
    model: PanaceaModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    preferences: Tensor,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    mixed: bool = True,
) -> list[list[str]]:
    """Greedy answers to every prompt at every λ: `answers[point][prompt]`, preferences (n, m).

    Prompts are sorted by length and cut into chunks of ⌈batch_size / n⌉; with `mixed` (the default) one
    `generate` call answers a chunk at all n λs at once (≈ batch_size rows, each with its own λ). With
    `mixed=False` the same chunks run one λ after another — the same rows, padded the same way, so the
    greedy answers are the same; `benchmarks/front_generation.py` times the two.
    """
    if preferences.ndim != 2 or len(preferences) == 0:
        raise ValueError(f"preferences must be a non-empty (points, m) tensor, got shape {tuple(preferences.shape)}.")
    points = len(preferences)
    answers: list[list[str]] = [[""] * len(prompts) for _ in range(points)]
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    chunk_size = max(1, -(-batch_size // points))
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        inputs = chat_inputs(tokenizer, [prompts[index] for index in chunk]).to(model.device)
        groups = [list(range(points))] if mixed else [[point] for point in range(points)]
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
            texts = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for slot, text in enumerate(texts):
                answers[group[slot // len(chunk)]][chunk[slot % len(chunk)]] = text.strip()
    return answers


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
