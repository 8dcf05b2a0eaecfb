"""`panacea serve`: batched answers equal answers alone, OpenAI's clients and formats, errors, disconnects.

A tiny random Llama with a two-dimension adapter behind a real uvicorn server on a free port, driven by the
official `openai` client and by raw httpx. Every greedy answer is checked against the same request generated
alone by transformers' `generate` on a second copy of the model (same seed, same weights).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

import torch  # noqa: E402

from panacea.generation import generate_text  # noqa: E402
from panacea.serving import Engine, GenerationRequest, SamplingParams, ServedModel, add_serve_parser  # noqa: E402
from panacea.serving.app import create_app  # noqa: E402
from panacea.serving.batch import DecodeBatch, left_padded, new_cache, positions_of  # noqa: E402
from panacea.serving.sampling import sample_tokens  # noqa: E402
from panacea.serving.text import TextStream  # noqa: E402
from tests.conftest import panacea_llama, tiny_tokenizer  # noqa: E402
from tests.helpers import alone  # noqa: E402

NAMES = ["helpful", "harmless"]
MODEL_NAME = "tiny"
CONTEXT = 64  # the tiny Llama's max_position_embeddings
# Seed 3's random adapter answers these with varied words that change with λ (seed 0 mostly answers padding).
PROMPTS = ["w5 w9 w11", "w7", "w20 w21 w22 w23 w24", "w30 w31", "w12 w13 w14 w15", "w50 w8"]
PREFERENCES = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]


def tiny_panacea():
    return panacea_llama(seed=3, preference_names=NAMES)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """The references' own copy: the engine thread sets the served model's λ while it runs."""
    return tiny_panacea()


@pytest.fixture(scope="module")
def served(tokenizer):
    engine = Engine(tiny_panacea(), tokenizer, max_batch_size=8, max_wait_ms=20)
    return ServedModel(MODEL_NAME, engine, 2, NAMES, torch.tensor([0.5, 0.5]))


@contextmanager
def running_server(served: ServedModel) -> Iterator[str]:
    """uvicorn in a thread, on a socket bound to a free port before it starts; yields the base URL."""
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def url(served):
    with running_server(served) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/health").json()


# --------------------------------------------------------------------------------------------------
# The engine: rows that join, leave and share batches decode as they would alone


def test_rows_that_join_mid_decode_and_leave_early_get_their_answers_alone(tokenizer, reference):
    requests = [
        GenerationRequest(
            tuple(tokenizer(prompt)["input_ids"]), torch.tensor(preference), SamplingParams(4 + 3 * index, 0.0)
        )
        for index, (prompt, preference) in enumerate(zip(PROMPTS, PREFERENCES, strict=True))
    ]
    tokens: dict[int, list[int]] = {index: [] for index in range(len(requests))}
    done = threading.Semaphore(0)
    engine = Engine(tiny_panacea(), tokenizer, max_batch_size=4, max_wait_ms=50)

    def collect(index: int):
        def emit(output):
            tokens[index].extend(output.token_ids)
            if index == 0 and len(tokens[0]) == 2:  # the last two wait for a free row, then join mid-decode
                engine.submit(requests[4], collect(4))
                engine.submit(requests[5], collect(5))
            if output.finish_reason is not None:
                done.release()

        return emit

    with engine:
        for index in range(4):
            engine.submit(requests[index], collect(index))
        for _ in requests:
            assert done.acquire(timeout=30)
        counts = engine.stats()
    for index, request in enumerate(requests):
        expected = alone(reference, request.prompt_ids, request.preference, request.sampling.max_tokens)
        assert tokens[index] == expected, f"request {index}"
    assert counts["peak_batch_size"] == 4 and counts["prefills"] >= 2
    assert len({tuple(answer) for answer in tokens.values()}) == len(requests)  # λ and prompt matter


def test_leaving_rows_cut_the_cache_columns_only_they_used():
    model = tiny_panacea()
    input_ids, mask = left_padded([[5, 6, 7, 8, 9], [10, 11]], pad_token_id=0, device=torch.device("cpu"))
    cache = new_cache(model.config)
    preference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions_of(mask),
            cache=cache,
            preference=preference,
        )
    batch = DecodeBatch.after_prefill(cache, mask, torch.tensor([12, 13]), preference)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    assert batch.positions.tolist() == [5, 2]
    assert batch.drop([0]) == [1]  # the long row leaves: its three extra columns go with it
    assert batch.attention_mask.tolist() == [[1, 1, 1]] and cache.layers[0].keys.shape[2] == 2
    assert torch.equal(batch.preference, torch.tensor([[0.0, 1.0]]))


def test_a_seeded_row_samples_the_same_tokens_whatever_shares_its_batch():
    logits = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    settings = [SamplingParams(8, 0.0), SamplingParams(8, 1.0, 0.9, seed=7), SamplingParams(8, 0.7, seed=1)]

    def draw(rows):
        generators = [
            None if settings[row].greedy else torch.Generator().manual_seed(settings[row].seed) for row in rows
        ]
        return sample_tokens(logits[rows], [settings[row] for row in rows], generators).tolist()

    together = draw([0, 1, 2])
    assert [draw([row])[0] for row in range(3)] == together
    assert together[0] == int(logits[0].argmax())
    tiny_nucleus = SamplingParams(8, 1.0, top_p=1e-6)  # only the most likely token is left
    assert sample_tokens(logits, [tiny_nucleus] * 3, [torch.Generator()] * 3).tolist() == logits.argmax(-1).tolist()


def test_sampling_without_a_nucleus_cut_draws_from_the_softmax():
    """top_p = 1 skips the sort: the draws still follow softmax(logits / T) (20,000 draws, 4 tokens)."""
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    setting, generator = SamplingParams(8, 0.8, top_p=1.0), torch.Generator().manual_seed(3)
    draws = torch.tensor([int(sample_tokens(logits, [setting], [generator])[0]) for _ in range(20_000)])
    shares = torch.bincount(draws, minlength=4) / len(draws)
    assert torch.allclose(shares, torch.softmax(logits[0] / 0.8, -1), atol=0.015)
    nucleus = SamplingParams(8, 0.8, top_p=0.7)  # the most likely token alone holds 0.718 ≥ 0.7
    draws = {int(sample_tokens(logits, [nucleus], [generator])[0]) for _ in range(200)}
    assert draws == {0}


def test_a_stop_string_is_held_back_until_it_is_decided(tokenizer):
    stream = TextStream(tokenizer, stop=["w9 w1"])
    w5, w9, w11 = tokenizer.convert_tokens_to_ids(["w5", "w9", "w11"])
    assert stream.push(w5) == "w5"
    assert stream.push(w9) == " "  # "w9" could start "w9 w1": held back
    assert stream.push(w11) == "" and stream.stopped and stream.text == "w5 "


# --------------------------------------------------------------------------------------------------
# The HTTP server with the official client


def test_a_chat_completion_is_generate_text_at_the_request_preference(client, reference, tokenizer):
    preference = {"helpful": 0.8, "harmless": 0.2}
    answer = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        temperature=0,
        max_tokens=10,
        extra_body={"preference": preference},
    )
    expected = alone(reference, tokenizer(PROMPTS[0])["input_ids"], [0.8, 0.2], 10)
    assert answer.choices[0].message.content == generate_text(reference, tokenizer, PROMPTS[0], preference, 10)
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == ("stop" if expected[-1] == 2 else "length")
    assert answer.usage.prompt_tokens == 3 and answer.usage.completion_tokens == len(expected)
    assert answer.model == MODEL_NAME and answer.object == "chat.completion"
    assert answer.preference == preference  # which λ answered: the request's, or the server's default


def test_a_completion_takes_a_list_and_the_default_preference_when_none(client, reference, tokenizer):
    prompt_ids = tokenizer(PROMPTS[3])["input_ids"]
    listed = client.completions.create(
        model=MODEL_NAME, prompt=PROMPTS[3], temperature=0, max_tokens=8, extra_body={"preference": [0.3, 0.7]}
    )
    assert listed.choices[0].text == tokenizer.decode(
        alone(reference, prompt_ids, [0.3, 0.7], 8), skip_special_tokens=True
    )
    default = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[3], temperature=0, max_tokens=8)
    assert default.preference == {"helpful": 0.5, "harmless": 0.5}
    assert default.choices[0].text == tokenizer.decode(
        alone(reference, prompt_ids, [0.5, 0.5], 8), skip_special_tokens=True
    )
    assert listed.object == "text_completion" and listed.usage.completion_tokens == 8


def test_streams_send_the_same_text_in_openai_chunks_then_done(client, url):
    settings = dict(model=MODEL_NAME, temperature=0, max_tokens=12, extra_body={"preference": [0.8, 0.2]})
    messages = [{"role": "user", "content": PROMPTS[5]}]
    whole = client.chat.completions.create(messages=messages, **settings)
    chunks = list(
        client.chat.completions.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **settings
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:-1]) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = "".join(
        chunk.choices[0].text for chunk in client.completions.create(prompt=PROMPTS[5], stream=True, **settings)
    )
    assert text == client.completions.create(prompt=PROMPTS[5], **settings).choices[0].text

    body = {"model": MODEL_NAME, "prompt": PROMPTS[5], "max_tokens": 3, "stream": True}
    raw = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(event.startswith("data: ") for event in events)
    assert json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"] is not None


def test_concurrent_requests_with_different_preferences_share_batches_and_answer_as_alone(
    client, url, reference, tokenizer
):
    jobs = [(PROMPTS[index], PREFERENCES[index], 6 + 2 * index) for index in range(len(PROMPTS))]
    answers: dict[int, object] = {}
    start = threading.Barrier(len(jobs))

    def ask(index: int) -> None:
        prompt, preference, max_tokens = jobs[index]
        start.wait()
        answers[index] = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=max_tokens,
            extra_body={"preference": preference},
        )

    before = stats(url)
    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = stats(url)
    for index, (prompt, preference, max_tokens) in enumerate(jobs):
        expected = alone(reference, tokenizer(prompt)["input_ids"], preference, max_tokens)
        assert answers[index].choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)
        assert answers[index].usage.completion_tokens == len(expected)
    forwards = (after["steps"] - before["steps"]) + (after["prefills"] - before["prefills"])
    assert after["tokens"] - before["tokens"] > forwards  # some forward passes served several rows


def test_a_seeded_sampled_answer_repeats_alone_and_in_company(client):
    settings = dict(model=MODEL_NAME, prompt=PROMPTS[1], temperature=1.0, top_p=0.95, max_tokens=10, seed=11)
    first = client.completions.create(**settings).choices[0].text
    assert client.completions.create(**settings).choices[0].text == first
    company = [
        threading.Thread(target=client.completions.create, kwargs={**settings, "seed": seed, "prompt": PROMPTS[2]})
        for seed in range(3)
    ]
    for thread in company:
        thread.start()
    again = client.completions.create(**settings).choices[0].text
    for thread in company:
        thread.join(60)
    assert again == first


def test_a_stop_string_ends_the_answer_before_it(client):
    settings = dict(model=MODEL_NAME, prompt=PROMPTS[0], temperature=0, max_tokens=10)
    words = client.completions.create(**settings).choices[0].text.split()
    stop = words[2]  # the third word: the answer ends after the first two
    stopped = client.completions.create(stop=[stop, "never"], **settings).choices[0]
    assert stopped.text == " ".join(words[: words.index(stop)]) + " " and stopped.finish_reason == "stop"


def test_models_lists_the_model_with_its_dimensions_and_health_answers(client, url):
    (card,) = client.models.list().data
    assert card.id == MODEL_NAME and card.preference_names == NAMES and card.max_model_len == CONTEXT
    assert card.default_preference == {"helpful": 0.5, "harmless": 0.5}
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    engine = health.json()  # the counters, and the seconds per phase since start (EngineStats)
    assert engine["prefill_tokens"] <= engine["prefill_padded_tokens"] and engine["started"] <= engine["requests"]
    assert engine["steps"] == sum(steps for steps, _ in engine["steps_by_rows"].values())
    assert engine["decode_rows"] == sum(int(rows) * steps for rows, (steps, _) in engine["steps_by_rows"].items())
    assert all(engine[f"{phase}_seconds"] >= 0 for phase in ("idle", "prefill", "join", "decode", "leave", "output"))


# --------------------------------------------------------------------------------------------------
# Errors: OpenAI's body, 400, and the server keeps serving


BAD_REQUESTS = {
    "λ of the wrong length": ({"preference": [1.0]}, "preference", "shape"),
    "a negative λ": ({"preference": [1.5, -0.5]}, "preference", "non-negative"),
    "λ not summing to 1": ({"preference": [0.5, 0.6]}, "preference", "sum to 1"),
    "an unknown name": ({"preference": {"helpful": 0.5, "funny": 0.5}}, "preference", "unknown name"),
    "several λs": ({"preference": [[0.5, 0.5], [1.0, 0.0]]}, "preference", "one λ"),
    "max_tokens 0": ({"max_tokens": 0}, "max_tokens", "positive"),
    "negative max_tokens": ({"max_tokens": -3}, "max_tokens", "positive"),
    "a prompt over the context": ({"prompt": " ".join(["w9"] * CONTEXT)}, "prompt", "maximum context length"),
    "prompt + max_tokens over the context": ({"max_tokens": CONTEXT}, "prompt", "maximum context length"),
    "a misspelt field": ({"preferences": [0.5, 0.5]}, "preferences", "unknown field"),
    "n > 1": ({"n": 2}, "n", "not supported"),
    "temperature over 2": ({"temperature": 3}, "temperature", "[0, 2]"),
    "no prompt": ({"prompt": None}, "prompt", "prompt"),
}


@pytest.mark.parametrize("change", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_gets_openai_s_400_body(url, change):
    fields, param, words = change
    body = {"model": MODEL_NAME, "prompt": PROMPTS[0], "max_tokens": 4, **fields}
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"]


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"model": "tiny", "prompt": "w5", "preference": [NaN, 1.0]}', "NaN"),
        (b'{"model": "tiny", "prompt": "w5",', "not valid JSON"),
        (b"[1, 2]", "JSON object body"),
    ],
    ids=["NaN in λ", "malformed JSON", "not an object"],
)
def test_a_malformed_body_gets_openai_s_400_body(url, content, words):
    response = httpx.post(
        f"{url}/v1/completions", content=content, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400 and words in response.json()["error"]["message"], response.text


def test_errors_reach_the_official_client_and_the_server_keeps_serving(client, url):
    messages = [{"role": "user", "content": PROMPTS[0]}]
    with pytest.raises(openai.BadRequestError, match="sum to 1") as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=messages, extra_body={"preference": [0.9, 0.9]})
    assert caught.value.body["param"] == "preference" and caught.value.body["code"] == "invalid_preference"
    with pytest.raises(openai.BadRequestError, match="maximum context length") as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "w5 " * CONTEXT}])
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="of max_completion_tokens") as caught:  # it said max_tokens
        client.chat.completions.create(model=MODEL_NAME, messages=messages, max_completion_tokens=CONTEXT)
    assert caught.value.body["code"] == "context_length_exceeded" and "max_tokens" not in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens must be a positive") as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=messages, max_completion_tokens=0, stream=True)
    assert caught.value.body["param"] == "max_completion_tokens"  # the field sent (it said max_tokens)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be a positive") as caught:
        client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=0)
    assert caught.value.body["param"] == "max_tokens"
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, temperature=0, max_tokens=3)
    assert answer.usage.completion_tokens >= 1 and stats(url)["alive"]


# --------------------------------------------------------------------------------------------------
# Clients that go away free their rows


@pytest.fixture
def slow_steps(served, monkeypatch):
    """Every forward pass of the served model takes 50 ms more, so a long answer takes seconds."""
    forward = served.engine.model.forward

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    monkeypatch.setattr(served.engine.model, "forward", slow)


def _wait_until_idle(url: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while (now := stats(url))["running"] or now["waiting"]:
        assert time.monotonic() < deadline, f"rows still running: {now}"
        time.sleep(0.02)
    return now


def test_a_client_that_leaves_mid_stream_frees_its_row(url, slow_steps, reference, tokenizer):
    max_tokens = 40  # about 2 s of slowed steps, if nothing stopped the row
    assert 2 not in alone(reference, tokenizer(PROMPTS[0])["input_ids"], [1.0, 0.0], max_tokens)  # no early EOS
    before = _wait_until_idle(url)
    body = {"model": MODEL_NAME, "prompt": PROMPTS[0], "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["preference"] = [1.0, 0.0]
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
        next(line for line in response.iter_lines() if line.startswith("data: "))
    after = _wait_until_idle(url, timeout=1.5)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens"] - before["tokens"] < max_tokens


def test_a_client_that_times_out_frees_its_row(url, slow_steps):
    before = _wait_until_idle(url)
    body = {"model": MODEL_NAME, "prompt": PROMPTS[0], "max_tokens": 40, "preference": [1.0, 0.0], "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/completions", json=body, timeout=0.3)
    after = _wait_until_idle(url, timeout=2)
    assert after["cancelled"] == before["cancelled"] + 1 and after["tokens"] - before["tokens"] < 40


# --------------------------------------------------------------------------------------------------
# The command line


def test_the_serve_command_parses_its_options():
    parser = argparse.ArgumentParser(prog="panacea")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "runs/x", "--preference", "helpful=0.8,harmless=0.2", "--max-batch-size", "4"])
    assert (args.adapter, args.preference, args.max_batch_size) == ("runs/x", {"helpful": 0.8, "harmless": 0.2}, 4)
    assert (args.host, args.port, args.max_wait_ms, args.device) == ("127.0.0.1", 8000, 5.0, "auto")
    assert args.max_prefill_tokens == 512 and args.run.__name__ == "run_serve"
    bad_options = (["--max-batch-size", "0"], ["--max-wait-ms", "-1"], ["--max-prefill-tokens", "0"])
    bad_options += (["--port", "70000"], ["--port", "0"], ["--port", "x"])  # 70000 failed in uvicorn, with a traceback
    for bad in (*bad_options, ["--preference", "helpful=0.8,0.2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "runs/x", *bad])


def test_an_address_in_use_or_unknown_is_refused_before_the_model_loads(monkeypatch):
    """uvicorn found a port in use (or an unknown host) only after the model had loaded, and exited 3 with its own
    log line (found by an independent review)."""
    import socket

    from panacea.serving import cli

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the address was checked")

    monkeypatch.setattr(cli, "load_served_model", refuse)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = argparse.Namespace(host="127.0.0.1", port=port)
        with pytest.raises(ValueError, match=rf"--host 127.0.0.1 --port {port}: cannot listen there \("):
            cli.run_serve(args)
    with pytest.raises(ValueError, match=r"--host 'no-such-host.invalid': not an address of this machine"):
        cli.run_serve(argparse.Namespace(host="no-such-host.invalid", port=8000))


def test_an_address_in_use_on_any_address_the_host_resolves_to_is_refused(monkeypatch):
    """uvicorn listens on every address a host resolves to (localhost: ::1 and 127.0.0.1); the check tried the first
    only, so a port taken on another let the model load and uvicorn fail after it (a review)."""
    import socket

    from panacea.serving import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        resolved = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("127.0.0.2", "127.0.0.1")
        ]
        monkeypatch.setattr(cli.socket, "getaddrinfo", lambda *args, **kwargs: resolved)  # 127.0.0.2's port is free
        with pytest.raises(ValueError, match=rf"--host localhost --port {port}: cannot listen there \(at 127.0.0.1\)"):
            cli.check_address("localhost", port)
    real = socket.socket

    def no_ipv6(family=socket.AF_INET, *args, **kwargs):  # a kernel without IPv6
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    resolved = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]  # fmt: skip
    monkeypatch.setattr(cli.socket, "socket", no_ipv6)
    cli.check_address("localhost", 0)  # served on 127.0.0.1, as asyncio skips the family it cannot create


def test_without_the_serve_extra_the_command_says_how_to_install_it(monkeypatch):
    from panacea.serving import cli

    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "fastapi" else object())
    with pytest.raises(RuntimeError, match=r"^fastapi is missing: pip install 'panacea-align\[serve\]'$"):
        cli.run_serve(argparse.Namespace())


def test_a_saved_adapter_loads_behind_an_engine_with_its_default_preference(tmp_path, tiny_model_dir):
    from panacea.serving import load_served_model

    model = panacea_llama(preference_names=NAMES)
    model.base_model.config.name_or_path = str(tiny_model_dir)
    model.save_pretrained(tmp_path / "run" / "adapter")
    served = load_served_model(tmp_path / "run", preference={"helpful": 0.8, "harmless": 0.2}, device="cpu")
    assert served.name == "run" and served.preference_json(served.default_preference) == {
        "helpful": 0.8,
        "harmless": 0.2,
    }
    assert served.engine.max_model_len == CONTEXT and served.engine.max_batch_size == 16
    with pytest.raises(ValueError, match="sum to 1"):  # refused before the base model loads
        load_served_model(tmp_path / "run", preference=[0.8, 0.8], model="no/such-model")


# --------------------------------------------------------------------------------------------------
# The benchmark


def test_the_throughput_benchmark_runs_its_three_servers_on_a_tiny_run(tmp_path, tiny_model_dir):
    import subprocess
    import sys
    from pathlib import Path

    model = panacea_llama(preference_names=NAMES)
    model.base_model.config.name_or_path = str(tiny_model_dir)
    model.save_pretrained(tmp_path / "run" / "adapter")
    script = Path(__file__).parents[1] / "benchmarks" / "serve_throughput.py"
    command = [sys.executable, str(script), str(tmp_path / "run"), "--clients", "2", "--requests", "1"]
    command += ["--max-tokens", "3", "--max-prompt-tokens", "40", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 2 | panacea serve (continuous batching, a λ per row) |" in done.stdout
    assert "panacea's answers equal to unbatched's: 2 of 2" in done.stdout
    assert "panacea's answers equal to soups's: 2 of 2" in done.stdout  # the vertex soup is the adapter, exactly
