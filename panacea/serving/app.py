"""The HTTP server: OpenAI's routes over one `ServedModel`, with server-sent events for `stream: true`.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health

Every error is OpenAI's body {"error": {"message", "type", "param", "code"}}: 400 for a request that cannot run
(checked before the response starts, so a stream never opens for it), 404 for another model or route, 500 when a
decode step fails. A client that goes away, streaming or not, frees its row at the next step.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from panacea import __version__

from .engine import Output
from .protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ResponseMeta,
    ServedModel,
    error_body,
    usage,
)

_FIELD_NAME = re.compile(r"(?!(?:str|int|float|bool|list|dict|none)$)[a-z_][a-z0-9_]*")  # not a union member's type
_DISCONNECT_POLL_SECONDS = 0.5  # how often a non-streaming request checks that its client is still there


def create_app(served: ServedModel) -> FastAPI:
    """The ASGI app; its lifespan starts the engine and stops it (ending unfinished requests) at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.engine.start()
        yield
        await asyncio.to_thread(served.engine.stop)

    app = FastAPI(title="panacea", version=__version__, lifespan=lifespan)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 with the engine's counters and per-phase seconds (EngineStats) while it runs, 503 once it has stopped."""
        stats = served.engine.stats()
        return JSONResponse({"status": "ok" if stats["alive"] else "stopped", **stats}, 200 if stats["alive"] else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [served.card()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _complete(served, body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _complete(served, body, request)

    return app


async def _complete(served: ServedModel, body: ChatCompletionRequest | CompletionRequest, request: Request) -> Response:
    generation = body.generation_request(served)  # every 400 is raised here, before any byte of the response
    meta = ResponseMeta(
        id=f"{body.ID_PREFIX}-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=served.name,
        preference=served.preference_json(generation.preference),
    )
    outputs = served.engine.generate(generation)
    prompt_tokens = len(generation.prompt_ids)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = _events(body, meta, outputs, prompt_tokens, include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the stream
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return await _unless_disconnected(request, _collect(body, meta, outputs, prompt_tokens))


async def _collect(
    body: ChatCompletionRequest | CompletionRequest, meta: ResponseMeta, outputs: AsyncIterator[Output], prompt: int
) -> JSONResponse:
    """The whole answer as one body."""
    texts, completion, finish_reason = [], 0, None
    try:
        async for output in outputs:
            if output.error is not None:
                raise APIError(500, f"generation failed: {output.error}", type="server_error")
            texts.append(output.text)
            completion += len(output.token_ids)
            finish_reason = output.finish_reason
    finally:
        await outputs.aclose()
    return JSONResponse(body.response(meta, "".join(texts), finish_reason, usage(prompt, completion)))


async def _events(
    body: ChatCompletionRequest | CompletionRequest,
    meta: ResponseMeta,
    outputs: AsyncIterator[Output],
    prompt: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: a chunk per step that adds text (the first and the last always), then `data: [DONE]`.

    When the client disconnects, the server cancels this generator or closes it; either way `outputs` is closed
    and the engine frees the row.
    """
    completion, first = 0, True
    try:
        async for output in outputs:
            if output.error is not None:
                yield _event(error_body(f"generation failed: {output.error}", "server_error"))
                break
            completion += len(output.token_ids)
            if output.text or first or output.finish_reason is not None:
                yield _event(body.chunk(meta, output.text, output.finish_reason, first))
                first = False
        else:
            if include_usage:
                yield _event(body.usage_chunk(meta, usage(prompt, completion)))
        yield "data: [DONE]\n\n"
    finally:
        await outputs.aclose()


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """`work`'s response, or its cancellation (which frees the row) if the client goes away first."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=_DISCONNECT_POLL_SECONDS)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    return task.result()


# --------------------------------------------------------------------------------------------------
# Errors as OpenAI's body


async def _api_error(request: Request, error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), error.status)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a malformed body, as OpenAI's 400: one message naming each field at fault."""
    problems: dict[str | None, list[str]] = {}  # {field path: what is wrong with it}
    for detail in error.errors():
        param = _field_path(detail.get("loc", ()))
        kind = detail.get("type")
        if kind == "json_invalid":
            param, problem = None, f"the body is not valid JSON: {detail.get('ctx', {}).get('error', 'decode error')}"
        elif kind == "extra_forbidden":
            problem = f"unknown field {param!r}"
        elif param is None:  # the body itself: missing, or not an object
            problem = "the request needs a JSON object body"
        else:
            problem = str(detail.get("msg"))
        problems.setdefault(param, []).append(problem)
    message = "; ".join(
        f"{param}: {' or '.join(texts)}" if param and "field" not in texts[0] else " or ".join(texts)
        for param, texts in problems.items()
    )
    return JSONResponse(error_body(f"{message}.", "invalid_request_error", next(iter(problems), None)), 400)


def _field_path(location: Sequence[str | int]) -> str | None:
    """'messages.0.content' from pydantic's ('body', 'messages', 0, 'content', 'str'): the request's field names and
    list indexes, without the body and the union members that pydantic names by their types ('str', 'list[str]')."""
    parts = [str(part) for part in location[1:] if isinstance(part, int) or _FIELD_NAME.fullmatch(str(part))]
    return ".".join(parts) or None


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    """Anything else (the engine stopped under a request, a bug): a 500 in OpenAI's body; the server logs the trace."""
    return JSONResponse(error_body(f"{type(error).__name__}: {error}", "server_error"), 500)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown route: 404, a wrong method: 405) in OpenAI's body."""
    message = str(error.detail)
    if error.status_code in (404, 405):
        message = (
            f"{request.method} {request.url.path} is not a route of this server; it has POST /v1/chat/completions, "
            "POST /v1/completions, GET /v1/models and GET /health."
        )
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    return JSONResponse(error_body(message, kind), error.status_code, headers=error.headers)
