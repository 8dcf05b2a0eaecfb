"""The continuous batcher: one thread runs the model, and requests with different λ join and leave between steps.

    submit ─► waiting queue ─► (engine thread) admit up to max_batch_size − rows already in the engine
           ─► each iteration: prefill one group of admitted prompts (≤ max_prefill_tokens, left-padded, one λ per
              row; a longer prompt goes alone, in chunks over several iterations) ─► its first tokens
           ─► join the running batch (DecodeBatch.extend) ─► one decode step for every running row, each at its λ
           ─► each row's new text to its consumer ─► drop finished and cancelled rows (DecodeBatch.drop) ─► repeat

A prefill pauses the running rows for at most one forward pass of max_prefill_tokens tokens per decode step (chunked
prefill with a token budget, vLLM's max_num_batched_tokens idea, without mixing prefill and decode in one pass).
Prompts that arrive together are grouped by length so that little of a group is padding (`prefill_group`). An idle
engine lets the first request wait up to `max_wait_ms` for others to share its prefill; a request that arrives
while rows are running joins at the next step boundary without waiting. `stats()` says where the time went. The
model is any module with PanaceaModel's `forward(..., preference=(batch, m))`: a PanaceaModel, or a SoupModel when
every row has the same λ.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from panacea.generation import cached_forward, eos_token_ids

from .batch import DecodeBatch, left_padded, new_cache, positions_of, prefill_group
from .sampling import InvalidRequest, SamplingParams, row_generator, sample_tokens
from .stats import EngineStats
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
        max_prefill_tokens: int = 512,
        max_model_len: int | None = None,
    ) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive number of rows, got {max_batch_size!r}.")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a non-negative number of milliseconds, got {max_wait_ms!r}.")
        if isinstance(max_prefill_tokens, bool) or not isinstance(max_prefill_tokens, int) or max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be a positive number of tokens, got {max_prefill_tokens!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_prefill_tokens = max_prefill_tokens
        self.max_model_len = max_model_len or _context_length(model.config)
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id or 0  # any id will do: padded positions are masked out
        new_cache(model.config)  # refuse a model whose cache cannot be batched before any request comes
        # logits at each row's last position only (a prefill needs no other), the cache under transformers' name
        self._forward = cached_forward(model)
        self._waiting: queue.SimpleQueue[_Row | None] = queue.SimpleQueue()
        self._pending: list[_Row] = []  # admitted, waiting for their prefill, oldest first
        self._prefilling: _Prefill | None = None  # the group whose prefill has started (chunked: not yet finished)
        self._rows: list[_Row] = []  # the running rows, in the batch's row order
        self._batch: DecodeBatch | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stats = EngineStats()

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
        self._stats.requests += 1
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

    def stats(self) -> dict[str, int | float | bool | dict]:
        """`EngineStats` since start (docs/serving.md), the running and waiting rows, and whether the thread is alive.

        `waiting` counts every request not decoding yet: queued, admitted, or in a prefill that has not finished.
        """
        alive = self._thread is not None and self._thread.is_alive()
        prefilling = self._prefilling
        waiting = self._waiting.qsize() + len(self._pending) + (len(prefilling.rows) if prefilling else 0)
        return {"alive": alive, "running": len(self._rows), "waiting": waiting, **self._stats.snapshot().to_json()}

    # ----------------------------------------------------------------------------------------------
    # The engine thread

    def _loop(self) -> None:
        with torch.inference_mode():
            while self._admit():
                try:
                    if self._pending or self._prefilling:
                        self._prefill()
                    if self._rows:
                        self._decode()
                except Exception as error:  # one failed step must not stop the server: fail what it held, go on
                    logger.exception(
                        "a prefill or decode step failed; the requests in the engine end with a server error"
                    )
                    self._abort(self._admitted(), error)
        self._abort([*self._admitted(), *_drain(self._waiting)], RuntimeError("the server is shutting down"))

    def _admit(self) -> bool:
        """Move the waiting requests that fit in the engine now to `_pending`; False to stop. An idle engine blocks
        for the first one and then waits up to `max_wait` for more; a busy one takes only those already waiting."""
        self._drop_finished()
        if self._stopping.is_set():
            return False
        busy, deadline = bool(self._admitted()), None
        waited = time.perf_counter()
        while len(self._admitted()) < self.max_batch_size:
            try:
                if busy:
                    row = self._waiting.get_nowait()
                elif deadline is None:
                    row = self._waiting.get()
                else:
                    row = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if row is None:
                return False
            if deadline is None:
                deadline = time.monotonic() + self.max_wait
            if row.handle.cancelled:
                self._stats.cancelled += 1
            else:
                self._pending.append(row)
        if not busy:
            self._stats.idle_seconds += time.perf_counter() - waited
        return True

    def _prefill(self) -> None:
        """One prefill forward pass of at most `max_prefill_tokens` tokens: the next chunk of the group in progress,
        or of a new group of pending prompts. When a group's prompts are all in, its rows join the running batch."""
        started = time.perf_counter()
        if self._prefilling is None:
            self._prefilling = self._next_group(started)
            if self._prefilling is None:
                return
        group = self._prefilling
        rows, width = len(group.rows), group.input_ids.shape[1]
        begin, end = group.done, min(width, group.done + max(1, self.max_prefill_tokens // rows))
        logits = self._forward(
            group.input_ids[:, begin:end],
            group.mask[:, :end],
            group.positions[:, begin:end],
            group.cache,
            group.preference,
        )
        group.done = end
        self._stats.prefills += 1
        self._stats.prefill_padded_tokens += rows * (end - begin)
        if end < width:
            self._stats.prefill_seconds += time.perf_counter() - started
            return
        tokens = sample_tokens(
            logits, [row.request.sampling for row in group.rows], [row.generator for row in group.rows]
        )
        token_list = tokens.tolist()
        self._stats.prefill_seconds += time.perf_counter() - started
        self._join(group, tokens)
        self._record(group.rows, token_list)

    def _join(self, group: _Prefill, tokens: Tensor) -> None:
        """A prefilled group's rows join the running batch (only their cache is copied), `tokens` (batch,) pending."""
        started = time.perf_counter()
        batch = DecodeBatch.after_prefill(group.cache, group.mask, tokens, group.preference)
        if self._batch is None:
            self._batch = batch
        else:
            self._batch.extend(batch, max_rows=self.max_batch_size)
        self._rows.extend(group.rows)
        self._prefilling = None
        finished = time.perf_counter()
        self._stats.join_seconds += finished - started
        self._stats.first_token_seconds += sum(finished - row.submitted for row in group.rows)
        self._stats.first_tokens += len(group.rows)

    def _next_group(self, now: float) -> _Prefill | None:
        """The next prompts to prefill together (`prefill_group`), taken from `_pending`, as a prefill in progress."""
        cancelled = [row for row in self._pending if row.handle.cancelled]
        if cancelled:
            self._stats.cancelled += len(cancelled)
            self._pending = [row for row in self._pending if not row.handle.cancelled]
        if not self._pending:
            return None
        chosen = prefill_group([len(row.request.prompt_ids) for row in self._pending], self.max_prefill_tokens)
        rows = [self._pending[index] for index in chosen]
        self._pending = [row for row in self._pending if row not in rows]
        input_ids, mask = left_padded([row.request.prompt_ids for row in rows], self.pad_token_id, self.device)
        preference = torch.stack([row.request.preference for row in rows]).to(self.device)
        for row in rows:
            self._stats.queue_seconds += now - row.submitted
        self._stats.started += len(rows)
        self._stats.prefill_tokens += int(mask.sum())
        return _Prefill(rows, input_ids, mask, positions_of(mask), preference, new_cache(self.model.config))

    def _decode(self) -> None:
        """One token for every running row, each at its own λ."""
        started = time.perf_counter()
        batch = self._batch
        logits = self._forward(**batch.inputs(), cache=batch.cache, preference=batch.preference)
        tokens = sample_tokens(
            logits, [row.request.sampling for row in self._rows], [row.generator for row in self._rows]
        )
        token_list = tokens.tolist()
        batch.advance(tokens)
        self._stats.add_step(len(batch), time.perf_counter() - started)
        self._record(self._rows, token_list)

    def _record(self, rows: Sequence[_Row], tokens: list[int]) -> None:
        """Give each row its new token, send its output, and drop the rows that have finished."""
        started = time.perf_counter()
        for row, token in zip(rows, tokens, strict=True):
            output = row.add(token, self.eos_token_ids, self.max_model_len)
            row.send(output)
        self._stats.tokens += len(tokens)
        self._stats.output_seconds += time.perf_counter() - started
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows from the batch (and the cache columns only they used)."""
        gone = [index for index, row in enumerate(self._rows) if row.finished or row.handle.cancelled]
        if not gone:
            return
        started = time.perf_counter()
        self._stats.cancelled += sum(not self._rows[index].finished for index in gone)
        if len(gone) == len(self._rows):
            self._rows, self._batch = [], None
        else:
            order = self._batch.drop(gone)
            self._rows = [self._rows[index] for index in order]
        self._stats.leave_seconds += time.perf_counter() - started

    def _admitted(self) -> list[_Row]:
        """Every request the engine thread holds: running, in a prefill, or pending."""
        return [*self._rows, *(self._prefilling.rows if self._prefilling else ()), *self._pending]

    def _abort(self, rows: Sequence[_Row], error: Exception) -> None:
        for row in rows:
            row.finished = True
            row.send(Output("", (), "error", error=f"{type(error).__name__}: {error}"))
        self._rows, self._batch, self._prefilling, self._pending = [], None, None, []


@dataclass(eq=False)
class _Prefill:
    """A group of prompts being prefilled together, left-padded; `done` columns of them are in `cache`."""

    rows: list[_Row]
    input_ids: Tensor  # (batch, seq)
    mask: Tensor  # (batch, seq): 1 on prompt tokens
    positions: Tensor  # (batch, seq)
    preference: Tensor  # (batch, m)
    cache: DynamicCache
    done: int = 0


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
    submitted: float = field(default_factory=time.perf_counter, init=False)  # for the queue and first-token times

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
