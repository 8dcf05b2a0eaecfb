"""The OpenAI wire format: request bodies in, engine requests out, and the response, chunk and error bodies.

Both routes take OpenAI's fields plus `preference`: a list of m weights or {name: weight}, validated by
`panacea.preferences.validate_preference` like every other λ in panacea. A field OpenAI defines but this server
does not implement (n > 1, penalties, logprobs, logit_bias, ...) is accepted only at its neutral value and
refused otherwise, and an unknown field is refused: a misspelt `preference` must not silently fall back to the
default λ.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from panacea.preferences import preference_as_json, validate_preference

from .engine import Engine, GenerationRequest
from .sampling import InvalidRequest, SamplingParams

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


class APIError(Exception):
    """An error response: HTTP status and OpenAI's body {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------------------------------
# The served model


@dataclass
class ServedModel:
    """The model as requests see it: its name, its dimensions and default λ, and the engine that runs it."""

    name: str
    engine: Engine
    num_preferences: int
    preference_names: list[str] | None
    default_preference: Tensor  # (m,), used when a request has no `preference`
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.engine.tokenizer

    def preference_for(self, value: Any) -> Tensor:
        """A request's λ, (m,): its `preference` field validated, or the default when it has none."""
        if value is None:
            return self.default_preference
        try:
            preference = validate_preference(value, self.num_preferences, names=self.preference_names)
        except ValueError as error:
            raise InvalidRequest(str(error), "preference", "invalid_preference") from None
        if preference.ndim != 1:
            raise InvalidRequest(
                f"preference must be one λ for the request: a list of {self.num_preferences} weights"
                f"{' or {name: weight}' if self.preference_names else ''}, got shape {tuple(preference.shape)}.",
                "preference",
                "invalid_preference",
            )
        return preference.float()

    def preference_json(self, preference: Tensor) -> dict[str, float] | list[float]:
        return preference_as_json(preference, self.preference_names)

    def card(self) -> dict[str, Any]:
        """The model's entry in GET /v1/models: OpenAI's fields and λ's dimensions."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "panacea",
            "max_model_len": self.engine.max_model_len,
            "num_preferences": self.num_preferences,
            "preference_names": self.preference_names,
            "default_preference": self.preference_json(self.default_preference),
        }


# --------------------------------------------------------------------------------------------------
# Requests


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]
    name: str | None = None

    def as_template_message(self) -> dict[str, str]:
        """{role, content} for a chat template; 'developer' (OpenAI's newer name) is sent as 'system'."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _OpenAIRequest(BaseModel):
    """The fields both routes share."""

    model_config = ConfigDict(extra="forbid")
    # {field: the values accepted}: OpenAI fields this server accepts only at their neutral value.
    NEUTRAL: ClassVar[dict[str, tuple]] = {
        "n": (None, 1),
        "frequency_penalty": (None, 0),
        "presence_penalty": (None, 0),
        "logit_bias": (None, {}),
    }
    OBJECT: ClassVar[str]
    CHUNK_OBJECT: ClassVar[str]
    ID_PREFIX: ClassVar[str]
    PROMPT_FIELD: ClassVar[str]

    model: str
    preference: Any = Field(
        None,
        description="λ: a list of one non-negative weight per dimension, summing to 1, or {name: weight} with the "
        "model's preference_names (GET /v1/models). Default: the server's --preference.",
    )
    max_tokens: int | None = None
    temperature: float | None = Field(None, description="In [0, 2]; 0 is greedy. Default 1.")
    top_p: float | None = Field(None, description="In (0, 1]. Default 1.")
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def generation_request(self, served: ServedModel) -> GenerationRequest:
        """The engine's request for this body; `APIError` (400 or 404) naming the field if it cannot run."""
        if self.model != served.name:
            raise APIError(
                404,
                f"The model {self.model!r} does not exist: this server serves {served.name!r} (GET /v1/models).",
                param="model",
                code="model_not_found",
            )
        length_field, requested = self.requested_max_tokens()
        try:
            for name, accepted in self.NEUTRAL.items():
                if getattr(self, name) not in accepted:
                    raise InvalidRequest(
                        f"{name}={getattr(self, name)!r} is not supported by panacea serve (it accepts only "
                        f"{' or '.join(repr(value) for value in accepted if value is not None)}).",
                        name,
                        "unsupported_parameter",
                    )
            preference = served.preference_for(self.preference)
            prompt_ids = tuple(self.prompt_ids(served.tokenizer))
            room = served.engine.max_model_len - len(prompt_ids)
            sampling = SamplingParams(
                max_tokens=self.default_max_tokens(room) if requested is None else requested,
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                stop=(self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ()),
                seed=self.seed,
            )
            request = GenerationRequest(prompt_ids, preference, sampling)
            served.engine.check(request)
        except InvalidRequest as error:
            message, param = str(error), error.param or self.PROMPT_FIELD
            if length_field != "max_tokens":  # name the field the client sent (the context-length error too)
                message = message.replace("max_tokens", length_field, 1)
                param = length_field if param == "max_tokens" else param
            raise APIError(400, message, param=param, code=error.code) from None
        return request

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        raise NotImplementedError

    def requested_max_tokens(self) -> tuple[str, int | None]:
        """(the field that sets the length, its value; None: not set): errors name that field."""
        return "max_tokens", self.max_tokens

    def default_max_tokens(self, room: int) -> int:
        """max_tokens when the request has none, given `room`, the context left after the prompt."""
        raise NotImplementedError

    # Response bodies -------------------------------------------------------------------------------

    def response(self, meta: ResponseMeta, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return {**meta.header(self.OBJECT), "choices": [self.choice(text, finish_reason)], "usage": usage}

    def chunk(self, meta: ResponseMeta, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        return {**meta.header(self.CHUNK_OBJECT), "choices": [self.chunk_choice(text, finish_reason, first)]}

    def usage_chunk(self, meta: ResponseMeta, usage: dict[str, int]) -> dict[str, Any]:
        """The last chunk when stream_options.include_usage: no choices, the usage."""
        return {**meta.header(self.CHUNK_OBJECT), "choices": [], "usage": usage}

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def chunk_choice(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        raise NotImplementedError


class ChatCompletionRequest(_OpenAIRequest):
    """POST /v1/chat/completions: the messages, in the tokenizer's chat template with the assistant's turn opened."""

    NEUTRAL: ClassVar[dict[str, tuple]] = {
        **_OpenAIRequest.NEUTRAL,
        "logprobs": (None, False),
        "top_logprobs": (None, 0),
    }
    OBJECT: ClassVar[str] = "chat.completion"
    CHUNK_OBJECT: ClassVar[str] = "chat.completion.chunk"
    ID_PREFIX: ClassVar[str] = "chatcmpl"
    PROMPT_FIELD: ClassVar[str] = "messages"

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, description="OpenAI's newer name for max_tokens; wins if both.")
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        return chat_prompt_ids(tokenizer, [message.as_template_message() for message in self.messages])

    def requested_max_tokens(self) -> tuple[str, int | None]:
        if self.max_completion_tokens is None:
            return "max_tokens", self.max_tokens
        return "max_completion_tokens", self.max_completion_tokens

    def default_max_tokens(self, room: int) -> int:
        """The rest of the context, as vLLM does; at least 1, so a prompt that fills it gets the context error."""
        return max(room, 1)

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}

    def chunk_choice(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text} if first else {"content": text} if text else {}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


class CompletionRequest(_OpenAIRequest):
    """POST /v1/completions: one prompt, continued as it is (the tokenizer's special tokens added, no template)."""

    NEUTRAL: ClassVar[dict[str, tuple]] = {
        **_OpenAIRequest.NEUTRAL,
        "logprobs": (None,),
        "echo": (None, False),
        "suffix": (None,),
        "best_of": (None, 1),
    }
    OBJECT: ClassVar[str] = "text_completion"
    CHUNK_OBJECT: ClassVar[str] = "text_completion"
    ID_PREFIX: ClassVar[str] = "cmpl"
    PROMPT_FIELD: ClassVar[str] = "prompt"

    prompt: str | list[str]
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise InvalidRequest(
                f"prompt must be one string (or a list of one), got a list of {len(prompts)}: send one request per "
                "prompt; concurrent requests are batched together anyway.",
                "prompt",
            )
        return tokenizer(prompts[0], add_special_tokens=True)["input_ids"]

    def default_max_tokens(self, room: int) -> int:
        return COMPLETIONS_DEFAULT_MAX_TOKENS

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    def chunk_choice(self, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
        return self.choice(text, finish_reason)


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of `messages` in the chat template with the assistant's turn opened.

    A tokenizer without a template gets the contents joined by newlines, with its special tokens. For one user
    message both are exactly what `panacea.generation.chat_inputs` feeds `generate_text`.
    """
    if not tokenizer.chat_template:
        return tokenizer("\n".join(message["content"] for message in messages), add_special_tokens=True)["input_ids"]
    try:
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    except Exception as error:  # jinja2's TemplateError, raised by templates that refuse some role orders
        raise InvalidRequest(f"the model's chat template refused these messages: {error}", "messages") from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class ResponseMeta:
    """What every body of one response repeats: its id, creation time, model, and the λ it was generated at."""

    id: str
    created: int
    model: str
    preference: dict[str, float] | list[float]

    def header(self, object_name: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model,
            "preference": self.preference,
        }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def uniform_preference(num_preferences: int) -> Tensor:
    """Equal weights, (m,): the default λ when the server is started without --preference."""
    return torch.full((num_preferences,), 1 / num_preferences)
