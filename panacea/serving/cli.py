"""`panacea serve`: its arguments, and loading the adapter behind the server.

Light on purpose, like `panacea.cli`: building the parser imports neither torch nor FastAPI, and `run_serve` says
in one line how to install the `serve` extra when FastAPI or uvicorn is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from panacea._io import read_json
from panacea._names import CONFIG_NAME, RUN_ADAPTER_DIR

if TYPE_CHECKING:
    from .protocol import ServedModel

logger = logging.getLogger(__name__)

SERVE_EXTRA = ("fastapi", "uvicorn")  # the modules of `pip install 'panacea-align[serve]'`


def add_serve_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `panacea serve` on the CLI's subcommands (`commands`, from `add_subparsers`)."""
    from panacea.cli import parse_preference

    serve = commands.add_parser(
        "serve",
        help="An OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions) where every request carries its "
        "own preference λ; concurrent requests are decoded in shared batches, one λ per row (docs/serving.md).",
    )
    serve.add_argument(
        "adapter",
        metavar="RUN_OR_ADAPTER",
        help=f"An adapter folder (written by PanaceaModel.save_pretrained), or a training run folder that holds "
        f"{RUN_ADAPTER_DIR}/.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: %(default)s).")
    serve.add_argument("--port", type=_port, default=8000, help="Port to listen on, 1–65535 (default: %(default)s).")
    serve.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=16,
        help="The most requests decoded together, each with its own λ; 1 turns batching off (default: %(default)s).",
    )
    serve.add_argument(
        "--max-wait-ms",
        type=_non_negative_float,
        default=5.0,
        help="How long an idle server lets a first request wait for others to share its prefill; requests that "
        "arrive while others decode join at the next step without waiting (default: %(default)s).",
    )
    serve.add_argument(
        "--max-prefill-tokens",
        type=positive_int,
        default=512,
        help="The most prompt tokens (padding included) one prefill pass computes between two decode steps, so a "
        "burst of prompts or a long one pauses the running rows for one such pass at a time; a longer prompt is "
        "prefilled in chunks (default: %(default)s).",
    )
    serve.add_argument(
        "--preference",
        type=parse_preference,
        help="The λ of requests that send none, in order (0.8,0.2) or by the adapter's preference names "
        "(helpful=0.8,harmless=0.2) (default: equal weights).",
    )
    serve.add_argument(
        "--model", help="Base model, a Hub id or a folder (default: the one the adapter was saved from)."
    )
    serve.add_argument(
        "--dtype", default="float32", help="The base model's dtype: float32, bfloat16, … (default: %(default)s)."
    )
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, … (default: auto, CUDA when available).")
    serve.add_argument(
        "--served-model-name",
        help="The name clients send as `model` and GET /v1/models lists (default: the folder's name).",
    )
    serve.set_defaults(run=run_serve)
    return serve


def run_serve(args: argparse.Namespace) -> None:
    """Load the adapter, then serve until interrupted (Ctrl-C stops the engine after its current step)."""
    missing = [name for name in SERVE_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise RuntimeError(f"{' and '.join(missing)} {verb} missing: pip install 'panacea-align[serve]'")
    import uvicorn

    from .app import create_app

    check_address(args.host, args.port)  # before the model loads (minutes for a large one)
    served = load_served_model(
        args.adapter,
        preference=args.preference,
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        name=args.served_model_name,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_prefill_tokens=args.max_prefill_tokens,
    )
    logger.info(
        "serving %r on http://%s:%d/v1: λ over %s, default %s, batches of up to %d rows",
        served.name,
        args.host,
        args.port,
        served.preference_names or f"{served.num_preferences} dimensions",
        served.preference_json(served.default_preference),
        args.max_batch_size,
    )
    try:
        uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="info")
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        logger.info("stopped")


def check_address(host: str, port: int) -> None:
    """Refuse, naming --host / --port, an address this process cannot listen on: unknown, not local, or in use.
    (uvicorn found out after the model had loaded, and exited 3 with its own log line.) Every address the host
    resolves to is tried, as uvicorn's server (asyncio's create_server) listens on each (localhost: ::1 and
    127.0.0.1). A port freed and taken between this check and the server's start is still reported by uvicorn."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"--host {host!r}: not an address of this machine ({error.strerror}).") from None
    for family, kind, protocol, _, address in dict.fromkeys(infos):
        try:
            probe = socket.socket(family, kind, protocol)
        except OSError:  # a family this kernel lacks (IPv6): asyncio's create_server skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                where = f" (at {address[0]})" if len(infos) > 1 else ""
                raise ValueError(
                    f"--host {host} --port {port}: cannot listen there{where} ({error.strerror})."
                ) from None


def load_served_model(
    adapter: str | Path,
    *,
    preference: list[float] | dict[str, float] | None = None,
    model: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    name: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    max_prefill_tokens: int = 512,
) -> ServedModel:
    """The saved adapter on its base model (`model`, else the one its fingerprint names) behind a new engine.

    The default λ is checked against the adapter's config before the model loads.
    """
    from panacea.cli import adapter_folder_of, load_on_its_base
    from panacea.preferences import validate_preference

    from .engine import Engine
    from .protocol import ServedModel, uniform_preference

    folder = adapter_folder_of(adapter)
    saved = read_json(folder / CONFIG_NAME)
    config = saved.get("adapter") if isinstance(saved.get("adapter"), dict) else {}
    num_preferences, names = config.get("num_preferences"), config.get("preference_names")
    if not isinstance(num_preferences, int) or num_preferences < 1:
        raise ValueError(f"{folder / CONFIG_NAME} has no adapter.num_preferences; is it a Panacea adapter?")
    if preference is None:
        default = uniform_preference(num_preferences)
    else:
        default = validate_preference(preference, num_preferences, names=names).float()
        if default.ndim != 1:
            raise ValueError(
                f"--preference must be one λ of {num_preferences} weights, got shape {tuple(default.shape)}."
            )
    panacea_model, tokenizer = load_on_its_base(folder, saved, model, dtype=dtype, device=device)
    engine = Engine(
        panacea_model,
        tokenizer,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_prefill_tokens=max_prefill_tokens,
    )
    name = name or Path(adapter).resolve().name  # runs/hh-2d → hh-2d
    return ServedModel(name, engine, num_preferences, names, default)


def _port(text: str) -> int:
    """A TCP port, 1–65535: checked before the model loads (a bad one failed in uvicorn's bind, with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (a count of rows, tokens or resamples), checked before anything loads."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
