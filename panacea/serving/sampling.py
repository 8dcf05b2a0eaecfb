"""How each row picks its next token: greedy, or temperature and nucleus (top-p) sampling with its own generator.

Every sampled row draws from a `torch.Generator` of its own, so a seeded request gives the same tokens whichever
rows share its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


class InvalidRequest(ValueError):
    """A request the engine refuses; `param` names the field at fault (OpenAI's error body has one), `code` the kind."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


@dataclass(frozen=True)
class SamplingParams:
    """One request's decoding settings, with OpenAI's names and defaults (temperature 1: sampling)."""

    max_tokens: int = field(metadata={"help": "The most tokens to generate, at least 1."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature in [0, 2]; 0 is greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus mass in (0, 1]: sample from the top tokens."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings that end the text (not included in it)."})
    seed: int | None = field(default=None, metadata={"help": "Seed of this request's generator, for repeatable draws."})

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidRequest(
                f"max_tokens must be a positive number of tokens, got {self.max_tokens!r}.", "max_tokens"
            )
        if not 0 <= self.temperature <= 2:  # also refuses NaN
            raise InvalidRequest(f"temperature must be a number in [0, 2], got {self.temperature!r}.", "temperature")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be a number in (0, 1], got {self.top_p!r}.", "top_p")
        if not all(isinstance(text, str) and text for text in self.stop):
            raise InvalidRequest(f"stop must be non-empty strings, got {list(self.stop)!r}.", "stop")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample_tokens(
    logits: Tensor, settings: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> Tensor:
    """The next token of every row, (batch,), from its logits (batch, vocab) and its settings.

    Greedy rows take the argmax; the others sample from softmax(logits / temperature), cut to the smallest set of
    top tokens whose mass reaches top_p (always at least the most likely one), with the row's generator. Only rows
    with top_p < 1 sort the vocabulary (the sort cost ~19 % of RL sampling at top_p = 1); the others draw from the
    softmax in vocabulary order: the same distribution.
    """
    tokens = logits.argmax(-1)
    sampled = [row for row, setting in enumerate(settings) if not setting.greedy]
    if not sampled:
        return tokens
    rows = torch.tensor(sampled, device=logits.device)
    temperature = torch.tensor([settings[row].temperature for row in sampled], device=logits.device)
    probabilities = torch.softmax(logits[rows].float() / temperature[:, None], dim=-1)  # (sampled, vocab)
    nucleus = [slot for slot, row in enumerate(sampled) if settings[row].top_p < 1]
    ranked: dict[int, tuple[Tensor, Tensor]] = {}  # slot -> (its cut probabilities, most likely first; their ids)
    if nucleus:
        top_p = torch.tensor([settings[sampled[slot]].top_p for slot in nucleus], device=logits.device)
        descending, order = probabilities[nucleus].sort(dim=-1, descending=True)
        mass_before = descending.cumsum(-1) - descending  # the mass of the more likely tokens
        descending = descending.masked_fill(mass_before >= top_p[:, None], 0.0)
        ranked = {slot: (descending[index], order[index]) for index, slot in enumerate(nucleus)}
    for slot, row in enumerate(sampled):
        weights, ids = ranked.get(slot, (probabilities[slot], None))
        choice = torch.multinomial(weights, 1, generator=generators[row])[0]
        tokens[row] = choice if ids is None else ids[choice]
    return tokens


def row_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator for one sampled row: seeded by the request, else from the operating system's entropy."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed % 2**64)  # torch takes [0, 2^64)
    return generator
