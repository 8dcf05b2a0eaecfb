"""Serving throughput: N concurrent clients, each with its own λ, against three servers side by side.

The same requests (prompts, λs, greedy decoding, --max-tokens) go to:

- panacea:   `panacea serve` as it ships: continuous batching, one λ per row, up to max(--clients) rows;
- unbatched: the same server with --max-batch-size 1, one request at a time (what batching alone gains);
- soups:     rewarded soups served the way it must be: one request at a time, its λ's interpolated LoRA mixed
             first (SoupModel.set_preference rebuilds it whenever λ changes), then its decode. A soup is one set of
             weights, so requests with different λ cannot share a batch.

For each N in --clients, N clients start together; client i sends --requests chat requests one after another, all
at its own λ_i (Dirichlet draws, the same for every server). Per server and N it prints tokens/s (completion tokens
over the wall time from the first send to the last answer), the p50 / p95 latency of a request and the rows per
forward pass, then the ratios, and how many answers agree across servers (greedy: all of them, up to a float
rounding that flips a near-tie under different padding).

Then where the time goes, from the engines' own timers (`GET /health` before and after each N, panacea/serving/
stats.py): per N, the engine seconds per round of N requests spent in prefill, decode, joins and leaves, output and
idle, with the queue wait and time to first token; the decode step time by rows per step, as the FLOP rate and the
weight-read rate it implies; and the ceilings of this machine measured in the server process before it serves
(fp32 GEMM at 1, 16 and 256 rows, and the rate of reading ~300 MB of weights once), with the compute floor they put
on the latency at N (Little's law: N requests in flight, each needing its FLOPs).

Each server runs in a child process with benchmarks/_children.py's settings (--threads torch threads,
OMP_WAIT_POLICY=PASSIVE unless set); the clients run here, on asyncio + httpx. Without --soups the soup is built from
the Panacea adapter's m vertex LoRAs (λ = e_i, as `export_lora` writes them): they share A, so the authors' 'ab' mix
(Σ λ_i B_i)(Σ λ_i A_i) is exactly the adapter at λ, at a soup's serving cost (one mixed LoRA of rank k + m, rebuilt
per λ). With --soups RUN, a trained rewarded-soups run (`panacea train CONFIG --set method=soups`) on the same base.

    pip install -e .[serve,test]
    python benchmarks/serve_throughput.py runs/hh-2d [--soups runs/soups-hh-2d] [--clients 1,4,16] [--requests 2]
    python benchmarks/serve_throughput.py runs/hh-2d --servers panacea --clients 1,16   # the breakdown only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import _children  # benchmarks/_children.py (the script's folder is on sys.path)
import httpx
import numpy as np
import torch

from panacea._io import read_json
from panacea._names import CONFIG_NAME
from panacea.serving.stats import EngineStats

CONTENDERS = {
    "panacea": "panacea serve (continuous batching, a λ per row)",
    "unbatched": "panacea serve --max-batch-size 1",
    "soups": "rewarded soups (LoRA mixed per λ, one request at a time)",
}
FOLDER_VARIABLE = "SERVE_THROUGHPUT_DIR"
SERVED_NAME = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="A Panacea training run (or adapter folder), e.g. runs/hh-2d.")
    parser.add_argument("--soups", help="A rewarded-soups run on the same base (default: the adapter's vertex LoRAs).")
    parser.add_argument("--model", help="Base model (default: the one the adapter was saved from).")
    parser.add_argument("--clients", default="1,4,16", help="Concurrent clients, comma-separated (%(default)s).")
    parser.add_argument("--requests", type=int, default=2, help="Requests per client, one after another.")
    parser.add_argument("--max-tokens", type=int, default=32, help="Tokens per answer (greedy; EOS may end sooner).")
    parser.add_argument("--max-prompt-tokens", type=int, default=256, help="Use only prompts this short (templated).")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="The batching server's --max-wait-ms.")
    parser.add_argument(
        "--max-prefill-tokens", type=int, default=512, help="The panacea servers' --max-prefill-tokens (%(default)s)."
    )
    parser.add_argument(
        "--servers", default=",".join(CONTENDERS), help=f"Which servers, comma-separated, of {', '.join(CONTENDERS)}."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the clients' λ draws.")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(args.child, Path(args.plan))
        return
    args.clients = sorted({int(count) for count in args.clients.split(",")})
    if args.clients[0] < 1 or args.requests < 1 or args.max_tokens < 1 or args.max_prefill_tokens < 1:
        parser.error("--clients, --requests, --max-tokens and --max-prefill-tokens must be positive.")
    unknown = sorted(set(args.servers.split(",")) - set(CONTENDERS))
    if unknown:
        parser.error(f"--servers: {unknown} are not among {list(CONTENDERS)}.")
    args.servers = [name for name in CONTENDERS if name in args.servers.split(",")]
    _children.quiet_third_party_output()

    with tempfile.TemporaryDirectory(prefix="serve-throughput-") as folder:
        workdir = Path(folder)
        plan = write_plan(args, workdir)
        load = os.getloadavg()[0]
        results = {}
        for name in args.servers:
            print(f"[{name}]", file=sys.stderr, flush=True)
            with child_server(name, plan, workdir / name) as url:
                asyncio.run(drive(url, json.loads(plan.read_text()), 1, warm_up=True))
                results[name] = {
                    clients: asyncio.run(drive(url, json.loads(plan.read_text()), clients)) for clients in args.clients
                }
            results[name]["server"] = json.loads((workdir / name / "result.json").read_text())
        report(args, json.loads(plan.read_text()), results, (load, os.getloadavg()[0]))


# ------------------------------------------------------------------------------------------------
# Parent: the plan, the servers, the clients


def write_plan(args, workdir: Path) -> Path:
    """The prompts that fit (chat-templated), each N's λs, and the servers' settings, as plan.json."""
    from panacea.eval.generations import PROMPT_SETS, load_prompts
    from transformers import AutoTokenizer

    from panacea.base_model import EMBEDDED_MODEL_NAME, embedded_model_folder
    from panacea.cli import adapter_folder_of
    from panacea.preferences import sample_preferences
    from panacea.serving.protocol import chat_prompt_ids

    saved = read_json(adapter_folder_of(args.run) / CONFIG_NAME)
    adapter, fingerprint = saved["adapter"], saved.get("base_model") or {}
    model = args.model or fingerprint.get("name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder() if model == EMBEDDED_MODEL_NAME else model)
    needed = max(args.clients) * args.requests
    records = load_prompts(next(s for s in PROMPT_SETS if s.name == "helpful_test"))
    prompts = [
        record["prompt"]
        for record in records
        if len(chat_prompt_ids(tokenizer, [{"role": "user", "content": record["prompt"]}])) <= args.max_prompt_tokens
    ][:needed]
    if not prompts:
        raise SystemExit(f"no helpful_test prompt fits --max-prompt-tokens {args.max_prompt_tokens}.")
    m = adapter["num_preferences"]
    preferences = {
        str(clients): sample_preferences(m, clients, rng=args.seed + clients).tolist() for clients in args.clients
    }
    plan = {
        **{key: value for key, value in vars(args).items() if key not in ("child", "plan")},
        "run": str(Path(args.run).resolve()),
        "soups": str(Path(args.soups).resolve()) if args.soups else None,
        "model": model,
        "max_batch_size": max(args.clients),
        "prompts": prompts,
        "preferences": preferences,
        "num_preferences": m,
        "preference_names": adapter.get("preference_names"),
    }
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


@contextmanager
def child_server(name: str, plan: Path, folder: Path) -> Iterator[str]:
    """One contender's server in a fresh interpreter (benchmarks/_children.py's environment); yields its URL.

    At the end it is sent SIGINT, shuts down like `panacea serve` on Ctrl-C, and writes result.json into `folder`.
    """
    folder.mkdir()
    threads = str(json.loads(plan.read_text())["threads"])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OMP_WAIT_POLICY": _children.omp_wait_policy(),
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",
        FOLDER_VARIABLE: str(folder),
    }
    log = folder / "log.txt"
    with log.open("w") as handle:
        command = [sys.executable, __file__, json.loads(plan.read_text())["run"], "--child", name, "--plan", str(plan)]
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        try:
            yield wait_until_serving(process, folder, log)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
    if not (folder / "result.json").is_file():
        raise SystemExit(f"the {name} server did not shut down cleanly; the end of its output:\n{_tail(log)}")


def wait_until_serving(process: subprocess.Popen, folder: Path, log: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before serving; its output:\n{_tail(log)}")
        port = folder / "port"
        if port.is_file():
            url = f"http://127.0.0.1:{port.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /health within {timeout:.0f} s; its output:\n{_tail(log)}")


async def drive(url: str, plan: dict, clients: int, warm_up: bool = False) -> dict:
    """N clients at once, each sending its requests one after another; wall time, latencies, tokens and answers."""
    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as http:
        before = (await http.get("/health")).json()
        started = time.perf_counter()
        answers = await asyncio.gather(*(one_client(http, plan, clients, index, warm_up) for index in range(clients)))
        wall = time.perf_counter() - started
        after = (await http.get("/health")).json()
    answers = [answer for client in answers for answer in client]
    engine = EngineStats.from_json(after).since(EngineStats.from_json(before))
    return {
        "wall": wall,
        "tokens": sum(answer["tokens"] for answer in answers),
        "latencies": [answer["latency"] for answer in answers],
        "texts": {answer["key"]: answer["text"] for answer in answers},
        "rows_per_forward": engine.tokens / max(engine.steps + engine.prefills, 1),
        "engine": engine,
    }


async def one_client(http: httpx.AsyncClient, plan: dict, clients: int, index: int, warm_up: bool) -> list[dict]:
    preference = plan["preferences"][str(clients)][index] if not warm_up else None
    answers = []
    for turn in range(1 if warm_up else plan["requests"]):
        prompt = plan["prompts"][(index * plan["requests"] + turn) % len(plan["prompts"])]
        body = {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 4 if warm_up else plan["max_tokens"],
            "temperature": 0,
            "preference": preference,
        }
        sent = time.perf_counter()
        response = await http.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise SystemExit(f"the server answered {response.status_code}: {response.text}")
        answer = response.json()
        answers.append(
            {
                "key": f"{index}/{turn}",
                "latency": time.perf_counter() - sent,
                "tokens": answer["usage"]["completion_tokens"],
                "text": answer["choices"][0]["message"]["content"],
            }
        )
    return answers


# ------------------------------------------------------------------------------------------------
# Children: one server each


def serve_child(name: str, plan_path: Path) -> None:
    import uvicorn

    from panacea.serving.app import create_app

    plan = json.loads(plan_path.read_text())
    folder = Path(os.environ[FOLDER_VARIABLE])
    _children.quiet_third_party_output()
    torch.set_num_threads(plan["threads"])
    served = soups_server(plan) if name == "soups" else panacea_server(plan, 1 if name == "unbatched" else None)
    model = served.engine.model
    ceilings = machine_ceilings(model.config) if name != "soups" else None  # before serving: nothing else runs
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = folder / "port"
    port.with_suffix(".partial").write_text(str(listener.getsockname()[1]))
    port.with_suffix(".partial").rename(port)  # the parent never reads half a number
    try:
        uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning")).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on, once the shutdown is complete
        pass
    result = {
        "engine": served.engine.stats(),
        "switch_seconds": getattr(model, "switch_seconds", []),
        "threads": torch.get_num_threads(),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "embedding_parameters": model.get_input_embeddings().weight.numel(),
        "bytes_per_parameter": next(model.parameters()).element_size(),
        "ceilings": ceilings,
    }
    (folder / "result.json").write_text(json.dumps(result))


def panacea_server(plan: dict, max_batch_size: int | None):
    from panacea.serving import load_served_model

    return load_served_model(
        plan["run"],
        model=plan["model"],
        device="cpu",
        name=SERVED_NAME,
        max_batch_size=max_batch_size or plan["max_batch_size"],
        max_wait_ms=plan["max_wait_ms"],
        max_prefill_tokens=plan["max_prefill_tokens"],
    )


@torch.inference_mode()
def machine_ceilings(config, weights_megabytes: int = 300) -> dict:
    """What this process can reach here: fp32 GEMM GFLOP/s on a (hidden → intermediate) weight at 1, 16 and 256 rows
    (a decode step's and a prefill's shapes), and GB/s reading `weights_megabytes` of distinct weights once at one
    row (a decode step of one row reads every weight once; far more than the last-level cache)."""
    hidden, wide = config.hidden_size, config.intermediate_size
    weight = torch.randn(wide, hidden)
    gflops = {}
    for rows in (1, 16, 256):
        inputs = torch.randn(rows, hidden)
        repeats = min(2000, max(10, 2_000_000_000 // (2 * rows * hidden * wide)))  # ~2 GFLOP, 10 to 2,000 passes
        torch.nn.functional.linear(inputs, weight)
        started = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(inputs, weight)
        gflops[str(rows)] = 2 * rows * hidden * wide * repeats / (time.perf_counter() - started) / 1e9
    count = min(4096, weights_megabytes * 2**20 // (4 * wide * hidden))
    weights = [torch.randn(wide, hidden) for _ in range(count)]
    inputs = torch.randn(1, hidden)
    for weight in weights[:4]:
        torch.nn.functional.linear(inputs, weight)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for weight in weights:
            torch.nn.functional.linear(inputs, weight)
        best = min(best, time.perf_counter() - started)
    return {"gemm_gflops": gflops, "weights_gb_per_second": 4 * wide * hidden * len(weights) / best / 1e9}


def soups_server(plan: dict):
    """The soup behind the same engine and app, one request at a time (its λ must be the whole batch's)."""
    from panacea.adapters import SoupModel, read_soups_manifest

    from panacea.base_model import load_base_model
    from panacea.serving import Engine, ServedModel

    if plan["soups"]:
        base, tokenizer = load_base_model(read_soups_manifest(plan["soups"])["base_model"]["name_or_path"])
        soup = SoupModel.from_run(base, plan["soups"], "ab")
    else:
        served = panacea_server(plan, 1)
        soup, tokenizer = vertex_soup(served.engine.model), served.tokenizer
    names = plan["preference_names"]
    default = torch.full((plan["num_preferences"],), 1 / plan["num_preferences"])
    return ServedModel(SERVED_NAME, Engine(soup, tokenizer, max_batch_size=1), plan["num_preferences"], names, default)


@torch.no_grad()
def vertex_soup(model):
    """A rewarded soup of the adapter's m vertex LoRAs: member i is (A, B·diag(d(e_i))·scaling), the export at e_i.

    The members share A, so the 'ab' mix (Σ λ_i B_i)(Σ λ_i A) = B·diag(d(λ))·A·scaling (d is affine in λ and
    Σ λ_i = 1): the adapter at λ. Consumes `model` (its base model gets the soup's LoRA slot instead).
    """
    from panacea.adapters import SoupModel, lora_config_for
    from peft import get_peft_model

    config = model.panacea_config
    vertices = torch.eye(config.num_preferences)
    members = {
        name: (
            layer.lora_A.detach().expand(config.num_preferences, -1, -1).clone(),  # (m, R, in)
            torch.stack([layer.scaled_lora_B(vertex) for vertex in vertices]),  # (m, out, R)
        )
        for name, layer in model.adapter_layers()
    }
    base = model.unload()
    slot = replace(
        lora_config_for(base, config), lora_alpha=config.rank, lora_dropout=0.0, use_rslora=False, inference_mode=True
    )
    names = config.preference_names or [f"dimension{index}" for index in range(config.num_preferences)]
    return SoupModel(get_peft_model(base, slot), members, scaling=1.0, mode="ab", dimensions=names).eval()


# ------------------------------------------------------------------------------------------------
# Report


def report(args, plan: dict, results: dict, load: tuple[float, float]) -> None:
    print(f"\n### Serving throughput: N clients, each with its own λ ({datetime.date.today().isoformat()})\n")
    print("| clients | server | tokens/s | p50 latency | p95 latency | rows per forward |")
    print("|---:|---|---:|---:|---:|---:|")
    speed, median, p95 = ({name: {} for name in args.servers} for _ in range(3))
    for clients in args.clients:
        for name in args.servers:
            run = results[name][clients]
            speed[name][clients] = run["tokens"] / run["wall"]
            median[name][clients] = statistics.median(run["latencies"])
            p95[name][clients] = float(np.percentile(run["latencies"], 95))
            print(
                f"| {clients} | {CONTENDERS[name]} | {speed[name][clients]:,.1f} | {median[name][clients]:.2f} s | "
                f"{p95[name][clients]:.2f} s | {run['rows_per_forward']:.1f} |"
            )
    others = [name for name in ("unbatched", "soups") if name in args.servers and "panacea" in args.servers]
    if others:
        print(
            "\n| clients | "
            + " | ".join(f"tokens/s: panacea / {other}" for other in others)
            + " | "
            + " | ".join(f"p50 latency: {other} / panacea" for other in others)
            + " |"
        )
        print("|---:|" + "---:|" * 2 * len(others))
        for clients in args.clients:
            ratios = [f"**{speed['panacea'][clients] / speed[other][clients]:.2f}×**" for other in others]
            ratios += [f"{median[other][clients] / median['panacea'][clients]:.2f}×" for other in others]
            print(f"| {clients} | " + " | ".join(ratios) + " |")
    first = args.clients[0]
    if len(args.clients) > 1:
        print(f"\n| clients | server | p50 latency / p50 at N = {first} | p95 latency / p95 at N = {first} |")
        print("|---:|---|---:|---:|")
        for clients in args.clients[1:]:
            for name in args.servers:
                print(
                    f"| {clients} | {CONTENDERS[name]} | {median[name][clients] / median[name][first]:.2f}× | "
                    f"**{p95[name][clients] / p95[name][first]:.2f}×** |"
                )

    server = results[args.servers[0]]["server"]
    soup = (
        f"the trained soups run {args.soups}" if args.soups else "the adapter's vertex LoRAs (exact: the same answers)"
    )
    print(
        f"\n- Settings: {server['threads']} torch threads per server, OMP_WAIT_POLICY "
        f"{_children.omp_wait_policy()}, load average {load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} CPUs; fp32 "
        f"CPU, torch {torch.__version__}; base model {plan['model']}, adapter {args.run}; soup: {soup}. Each client "
        f"sends {args.requests} chat request(s) in turn at its own λ (Dirichlet, seed {args.seed}), greedy, "
        f"max_tokens {args.max_tokens}; {len(plan['prompts'])} helpful_test prompts of ≤ {args.max_prompt_tokens} "
        f"templated tokens; batching server: up to {plan['max_batch_size']} rows, --max-wait-ms {args.max_wait_ms:g}, "
        f"--max-prefill-tokens {args.max_prefill_tokens}."
    )
    switches = results["soups"]["server"]["switch_seconds"] if "soups" in args.servers else []
    if switches:
        print(
            f"- Soup: {len(switches)} rebuilds of the mixed LoRA, median {statistics.median(switches) * 1000:.1f} ms "
            "each (one per request whose λ differs from the one before)."
        )
    for other in others:
        same = total = 0
        for clients in args.clients:
            mine, theirs = results["panacea"][clients]["texts"], results[other][clients]["texts"]
            same += sum(mine[key] == theirs[key] for key in mine)
            total += len(mine)
        print(f"- Checks: panacea's answers equal to {other}'s: {same} of {total}.")
    engines = [name for name in ("panacea", "unbatched") if name in args.servers]
    if engines:
        breakdown(args, results, engines, median, p95)


def breakdown(args, results: dict, engines: list[str], median: dict, p95: dict) -> None:
    """Where the engine's time goes per N, the decode step time by rows, and the bounds this machine puts on them."""
    print(
        "\n#### Where the time goes: engine seconds per round (each client's one request; a round's phases add up to "
        "about one request's latency)\n"
    )
    print(
        "| clients | server | p50 latency | prefill | decode | join + leave | output | idle | queue wait | "
        "first token | rows per step | prompt tokens (computed) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients in args.clients:
        for name in engines:
            stats: EngineStats = results[name][clients]["engine"]
            rounds = args.requests
            moves = (stats.join_seconds + stats.leave_seconds) / rounds
            print(
                f"| {clients} | {name} | {median[name][clients]:.2f} s | {stats.prefill_seconds / rounds:.2f} s | "
                f"{stats.decode_seconds / rounds:.2f} s | {moves:.3f} s | "
                f"{stats.output_seconds / rounds:.3f} s | {stats.idle_seconds / rounds:.2f} s | "
                f"{stats.queue_seconds / max(stats.started, 1):.2f} s | "
                f"{stats.first_token_seconds / max(stats.first_tokens, 1):.2f} s | "
                f"{stats.decode_rows / max(stats.steps, 1):.1f} | "
                f"{stats.prefill_tokens:,} ({stats.prefill_padded_tokens:,}) |"
            )

    server = results[engines[0]]["server"]
    parameters, embedding = server["parameters"], server["embedding_parameters"]
    weight_bytes = parameters * server["bytes_per_parameter"]
    print(
        f"\n#### Decode step time by rows per step ({parameters / 1e6:.0f} M parameters, {weight_bytes / 1e6:.0f} MB "
        "of weights read per step, 2 FLOP per parameter per row)\n"
    )
    print("| server | rows | steps | ms per step | ms per row | GFLOP/s | weights read, GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in engines:
        pooled: dict[int, list[float]] = {}
        for clients in args.clients:
            for rows, (steps, seconds) in results[name][clients]["engine"].steps_by_rows.items():
                tally = pooled.setdefault(rows, [0, 0.0])
                tally[0], tally[1] = tally[0] + steps, tally[1] + seconds
        for rows, (steps, seconds) in sorted(pooled.items()):
            step = seconds / steps
            print(
                f"| {name} | {rows} | {steps} | {step * 1000:.1f} | {step * 1000 / rows:.1f} | "
                f"{2 * parameters * rows / step / 1e9:.1f} | {weight_bytes / step / 1e9:.1f} |"
            )

    ceilings = server["ceilings"]
    gemm = ceilings["gemm_gflops"]
    everything = [results[engines[0]][clients]["engine"] for clients in args.clients]
    prompt = sum(stats.prefill_tokens for stats in everything) / max(sum(stats.started for stats in everything), 1)
    completion = sum(stats.tokens for stats in everything) / max(sum(stats.first_tokens for stats in everything), 1)
    prefill_seconds = sum(stats.prefill_seconds for stats in everything)
    prefill_flop = 2 * (parameters - embedding) * sum(stats.prefill_padded_tokens for stats in everything)
    request_flop = 2 * (parameters - embedding) * prompt + 2 * parameters * completion
    print(
        f"\n- Ceilings of this machine, measured in the {engines[0]} server process before it served: fp32 GEMM "
        f"{gemm['1']:.0f} / {gemm['16']:.0f} / {gemm['256']:.0f} GFLOP/s at 1 / 16 / 256 rows; reading "
        f"{ceilings['weights_gb_per_second']:.1f} GB/s of weights at one row. A decode step of r rows needs at least "
        f"max({2 * parameters / 1e9:.2f} GFLOP × r / GEMM rate, {weight_bytes / 1e6:.0f} MB / read rate)."
    )
    if prefill_seconds:
        print(
            f"- Prefill ({engines[0]}): {prefill_flop / prefill_seconds / 1e9:.0f} GFLOP/s over the tokens it "
            f"computed, 2 × {(parameters - embedding) / 1e6:.0f} M FLOP each (the LM head runs on the last position "
            "only)."
        )
    print(
        f"- A request here: {prompt:.0f} prompt and {completion:.0f} completion tokens on average, "
        f"{request_flop / 1e9:.1f} GFLOP. With N requests in flight the server finishes N of them per latency "
        f"(Little's law), so at N the latency is at least N × {request_flop / 1e9:.1f} GFLOP / "
        f"{max(gemm.values()):.0f} GFLOP/s (the best GEMM rate):"
    )
    for clients in args.clients:
        floor = clients * request_flop / max(gemm.values()) / 1e9
        line = f"  N = {clients}: ≥ {floor:.2f} s; measured p50 {median[engines[0]][clients]:.2f} s"
        if clients > args.clients[0]:
            target = 2 * p95[engines[0]][args.clients[0]]
            line += f", the target p95 ≤ 2 × p95 at N = {args.clients[0]} is {target:.2f} s"
        print(line + ".")


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text().splitlines()[-lines:])


if __name__ == "__main__":
    main()
