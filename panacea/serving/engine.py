"""The continuous batcher: one thread runs the model, and requests with different λ join and leave between steps.

    submit ─► waiting queue ─► (engine thread) admit up to max_batch_size − running rows
           ─► prefill the admitted prompts together: left-padded, one λ per row ─► their first tokens
           ─► join the running batch (DecodeBatch.extend) ─► one decode step for every row, each at its own λ
           ─► each row's new text to its consumer ─► drop finished and cancelled rows (DecodeBatch.keep) ─► repeat

A prefill pauses the running rows for one forward pass (there is no chunked prefill). An idle engine lets the first
request wait up to `max_wait_ms` for others to share its prefill; a request that arrives while rows are running
joins at the next step boundary without waiting. The model is any module with PanaceaModel's
`forward(..., preference=(batch, m))`: a PanaceaModel, or a SoupModel when every row has the same λ.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from .batch import DecodeBatch, left_padded, new_cache, positions_of
from .sampling import InvalidRequest, SamplingParams, row_generator, sample_tokens
from .text import TextStream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: a prompt's token ids, the preference λ (m,) already validated, and how to decode."""

    prompt_ids: tuple[int, ...]
    preference: Tensor
    sampling: SamplingParams


@dataclass(frozen=True)
class Output:
    """What one step added to a request: its new text (possibly empty), its new token, and why it ended, if it did.

    finish_reason is OpenAI's: "stop" (EOS or a stop string) or "length" (max_tokens or the context); "error" when
    the step failed, with the reason in `error`.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None
    error: str | None = None


class RequestHandle:
    """Returned by `Engine.submit`: `cancel()` frees the request's row before the next step (a no-op once done)."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class Engine:
    """Serves generation requests, each with its own λ, from one model in continuous batches on a thread of its own.

    `start()` (or `with engine:`) starts the thread; `submit` queues a request and returns at once, and the request's
    `Output`s reach its `emit` callback from the engine thread. `generate` is the same for asyncio code.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_model_len: int | None = None,
    ) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive number of rows, got {max_batch_size!r}.")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a non-negative number of milliseconds, got {max_wait_ms!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_model_len = max_model_len or _context_length(model.config)
        self.eos_token_ids = _eos_token_ids(model.generation_config.eos_token_id, tokenizer.eos_token_id)
        self.pad_token_id = tokenizer.pad_token_id or 0  # any id will do: padded positions are masked out
        new_cache(model.config)  # refuse a model whose cache cannot be batched before any request comes
        parameters = inspect.signature(model.base_model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"  # transformers >= 5.x: cache
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self._waiting: queue.SimpleQueue[_Row | None] = queue.SimpleQueue()
        self._rows: list[_Row] = []  # the running rows, in the batch's row order
        self._batch: DecodeBatch | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._counts = {"requests": 0, "cancelled": 0, "prefills": 0, "steps": 0, "tokens": 0, "peak_batch_size": 0}

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------------------------------------
    # The caller's side (any thread)

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="panacea-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Let the current step finish, end every request still running or waiting with an error, and join."""
        if self._thread is not None:
            self._stopping.set()
            self._waiting.put(None)  # wakes an idle engine
            self._thread.join()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def check(self, request: GenerationRequest) -> None:
        """Raise `InvalidRequest` if `request` cannot run: an empty prompt, or prompt + max_tokens over the context."""
        prompt, completion = len(request.prompt_ids), request.sampling.max_tokens
        if prompt == 0:
            raise InvalidRequest("the prompt is empty: it must hold at least one token.", code="empty_prompt")
        if prompt + completion > self.max_model_len:
            raise InvalidRequest(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt + completion} tokens ({prompt} in the prompt, {completion} in the completion). Please reduce "
                "the length of the prompt or of max_tokens.",
                code="context_length_exceeded",
            )

    def submit(self, request: GenerationRequest, emit: Callable[[Output], None]) -> RequestHandle:
        """Queue `request`; its `Output`s go to `emit`, called on the engine thread, the last with a finish_reason."""
        self.check(request)
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the engine is not running: call start() first (or it has stopped).")
        row = _Row(request, emit, TextStream(self.tokenizer, request.sampling.stop))
        if not request.sampling.greedy:
            row.generator = row_generator(request.sampling.seed, self.device)
        self._counts["requests"] += 1
        self._waiting.put(row)
        return row.handle

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Output]:
        """`submit` for asyncio: yields the outputs; closing the iterator early (or cancelling it) frees the row."""
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[Output] = asyncio.Queue()
        handle = self.submit(request, lambda output: loop.call_soon_threadsafe(outputs.put_nowait, output))
        try:
            while True:
                output = await outputs.get()
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            handle.cancel()  # a no-op when the row has finished

    def stats(self) -> dict[str, int | bool]:
        """Counters since start, the running and waiting rows, and whether the engine thread is alive."""
        alive = self._thread is not None and self._thread.is_alive()
        return {"alive": alive, "running": len(self._rows), "waiting": self._waiting.qsize(), **self._counts}

    # ----------------------------------------------------------------------------------------------
    # The engine thread

    def _loop(self) -> None:
        with torch.inference_mode():
            while (admitted := self._admit()) is not None:
                try:
                    if admitted:
                        self._prefill(admitted)
                    if self._rows:
                        self._decode()
                except Exception as error:  # one failed step must not stop the server: fail its rows, go on
                    logger.exception("a decode step failed; its requests end with a server error")
                    self._abort([*self._rows, *(row for row in admitted if row not in self._rows)], error)
        self._abort([*self._rows, *_drain(self._waiting)], RuntimeError("the server is shutting down"))

    def _admit(self) -> list[_Row] | None:
        """Waiting requests that fit in the batch now, or None to stop. An idle engine blocks for the first one and
        then waits up to `max_wait` for more; a running one takes only those already waiting."""
        self._drop_finished()
        if self._stopping.is_set():
            return None
        admitted: list[_Row] = []
        deadline = None
        while len(admitted) < self.max_batch_size - len(self._rows):
            try:
                if self._rows:
                    row = self._waiting.get_nowait()
                elif deadline is None:
                    row = self._waiting.get()
                else:
                    row = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if row is None:
                return None
            if deadline is None:
                deadline = time.monotonic() + self.max_wait
            if row.handle.cancelled:
                self._counts["cancelled"] += 1
            else:
                admitted.append(row)
        return admitted

    def _prefill(self, admitted: list[_Row]) -> None:
        """Run the admitted prompts together, take each one's first token, and join them to the running batch."""
        input_ids, prompt_mask = left_padded(
            [row.request.prompt_ids for row in admitted], self.pad_token_id, self.device
        )
        preference = torch.stack([row.request.preference for row in admitted]).to(self.device)
        cache = new_cache(self.model.config)
        logits = self._forward(input_ids, prompt_mask, positions_of(prompt_mask), cache, preference)
        tokens = sample_tokens(logits, [row.request.sampling for row in admitted], [row.generator for row in admitted])
        batch = DecodeBatch.after_prefill(cache, prompt_mask, tokens, preference)
        if self._batch is None:
            self._batch = batch
        else:
            self._batch.extend(batch)
        self._rows.extend(admitted)
        self._counts["prefills"] += 1
        self._record(admitted, tokens)

    def _decode(self) -> None:
        """One token for every running row, each at its own λ."""
        batch = self._batch
        logits = self._forward(**batch.inputs(), cache=batch.cache, preference=batch.preference)
        tokens = sample_tokens(
            logits, [row.request.sampling for row in self._rows], [row.generator for row in self._rows]
        )
        batch.advance(tokens)
        self._counts["steps"] += 1
        self._counts["peak_batch_size"] = max(self._counts["peak_batch_size"], len(batch))
        self._record(self._rows, tokens)

    def _forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: DynamicCache, preference: Tensor
    ) -> Tensor:
        """Logits (batch, vocab) at every row's last position; the model appends this input's keys to `cache`."""
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            preference=preference,
            use_cache=True,
            **{self._cache_argument: cache},
            **self._last_logits_only,
        )
        return output.logits[:, -1]

    def _record(self, rows: Sequence[_Row], tokens: Tensor) -> None:
        """Give each row its new token, send its output, and drop the rows that have finished."""
        for row, token in zip(rows, tokens.tolist(), strict=True):
            output = row.add(token, self.eos_token_ids, self.max_model_len)
            self._counts["tokens"] += 1
            row.send(output)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows from the batch (and the cache columns only they used)."""
        keep = [index for index, row in enumerate(self._rows) if not row.finished and not row.handle.cancelled]
        if len(keep) == len(self._rows):
            return
        self._counts["cancelled"] += sum(not row.finished for row in self._rows) - len(keep)
        self._rows = [self._rows[index] for index in keep]
        if keep:
            self._batch.keep(keep)
        else:
            self._batch = None

    def _abort(self, rows: Sequence[_Row], error: Exception) -> None:
        for row in rows:
            row.finished = True
            row.send(Output("", (), "error", error=f"{type(error).__name__}: {error}"))
        self._rows, self._batch = [], None


@dataclass(eq=False)
class _Row:
    """A request in the engine: its consumer, its text so far, and its own sampling generator."""

    request: GenerationRequest
    emit: Callable[[Output], None]
    text: TextStream
    generator: torch.Generator | None = None
    generated: int = 0
    finished: bool = False
    handle: RequestHandle = field(default_factory=RequestHandle, init=False)

    def add(self, token: int, eos_token_ids: frozenset[int], max_model_len: int) -> Output:
        """The output for a newly generated token: its text, and whether the row ends here."""
        self.generated += 1
        if token in eos_token_ids:
            text, reason = self.text.flush(), "stop"
        else:
            text = self.text.push(token)
            full = self.generated >= self.request.sampling.max_tokens
            full |= len(self.request.prompt_ids) + self.generated >= max_model_len
            reason = "stop" if self.text.stopped else "length" if full else None
            if reason == "length":
                text += self.text.flush()
        self.finished = reason is not None
        return Output(text, (token,), reason)

    def send(self, output: Output) -> None:
        try:
            self.emit(output)
        except Exception:  # the consumer is gone (e.g. its event loop has closed): free the row
            logger.debug("a request's consumer failed; its row is freed", exc_info=True)
            self.handle.cancel()


def _drain(waiting: queue.SimpleQueue) -> list[_Row]:
    rows = []
    while True:
        try:
            row = waiting.get_nowait()
        except queue.Empty:
            return rows
        if row is not None:
            rows.append(row)


def _context_length(config) -> int:
    """The longest sequence the model's positions cover (max_position_embeddings)."""
    length = getattr(config.get_text_config(), "max_position_embeddings", None)
    if not isinstance(length, int) or length < 2:
        raise ValueError(
            f"{type(config).__name__} has no max_position_embeddings to bound prompts with; pass max_model_len."
        )
    return length


def _eos_token_ids(generation_eos: int | list[int] | None, tokenizer_eos: int | None) -> frozenset[int]:
    """The tokens that end a row: the generation config's EOS ids (as `generate` uses), else the tokenizer's."""
    ids = generation_eos if generation_eos is not None else tokenizer_eos
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)
