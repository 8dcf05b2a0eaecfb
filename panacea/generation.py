"""Text in, text out: chat-formatted greedy generation at a given preference."""

from __future__ import annotations

import torch
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
    if tokenizer.chat_template:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = inputs.to(model.device)
    output = model.generate(
        **inputs,
        preference=preference,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
