"""The `panacea` command line: demo, generate, export."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

import yaml
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from panacea._io import read_json
from panacea.adapters import PanaceaModel
from panacea.adapters.serialization import CONFIG_NAME
from panacea.base_model import load_base_model
from panacea.demo import DemoConfig, run_demo
from panacea.generation import generate_text


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    quiet_third_party_output()
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError, yaml.YAMLError) as error:
        print(f"panacea {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def quiet_third_party_output() -> None:
    """Keep a command's output to what panacea says: no loading bars, no warnings a user cannot act on."""
    transformers_logging.disable_progress_bar()
    # peft 0.21 reads a transformers 5 property that transformers has renamed.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panacea", description="One model for every trade-off between objectives.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="Inject a seeded adapter into the base model, generate at two "
        "preferences, save it and export one trade-off as a peft LoRA.",
    )
    demo.add_argument("--config", help="YAML demo config (default: built-in values, as in configs/demo.yaml).")
    demo.set_defaults(run=_run_demo)

    generate = commands.add_parser("generate", help="Answer a prompt at a preference.")
    _add_adapter_arguments(generate)
    generate.add_argument("prompt", help="The user message.")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.set_defaults(run=_run_generate)

    export = commands.add_parser("export", help="Write one trade-off as a plain peft LoRA adapter.")
    _add_adapter_arguments(export)
    export.add_argument("output_dir", help="Folder for adapter_config.json + adapter_model.safetensors.")
    export.set_defaults(run=_run_export)
    return parser


def _add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="A folder written by PanaceaModel.save_pretrained.")
    parser.add_argument(
        "--preference",
        required=True,
        type=_parse_preference,
        help="Comma-separated weights on the simplex, e.g. 0.8,0.2.",
    )
    parser.add_argument("--model", help="Base model (HF id or path); default: the one the adapter was saved from.")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")


def _parse_preference(text: str) -> list[float]:
    try:
        return [float(weight) for weight in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.8,0.2, got {text!r}") from None


def _run_demo(args: argparse.Namespace) -> None:
    run_demo(DemoConfig.from_yaml(args.config) if args.config else DemoConfig())


def _load_adapter(args: argparse.Namespace) -> tuple[PanaceaModel, PreTrainedTokenizerBase]:
    """The saved adapter on its base model: --model, else the name recorded in the adapter's fingerprint."""
    fingerprint = read_json(f"{args.adapter}/{CONFIG_NAME}").get("base_model") or {}
    model_name = args.model or (fingerprint.get("name_or_path") if isinstance(fingerprint, dict) else None)
    if not model_name:
        raise ValueError(f"{args.adapter} does not record which base model it was saved from; pass --model.")
    base_model, tokenizer = load_base_model(model_name, dtype=args.dtype, device=args.device)
    return PanaceaModel.from_pretrained(base_model, args.adapter), tokenizer


def _run_generate(args: argparse.Namespace) -> None:
    model, tokenizer = _load_adapter(args)
    print(generate_text(model, tokenizer, args.prompt, args.preference, args.max_new_tokens))


def _run_export(args: argparse.Namespace) -> None:
    model, _ = _load_adapter(args)
    model.export_lora(args.preference, args.output_dir)
    print(f"wrote a peft LoRA for λ = {args.preference} to {args.output_dir}")


if __name__ == "__main__":
    sys.exit(main())
