"""The `panacea` command line: demo, train, eval, compare, generate, export, serve.

Parsing the arguments needs only the names in panacea._names: each command imports what it runs (torch,
transformers, peft) when it runs, so `panacea --help` and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from panacea._io import read_json
from panacea._names import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIG_NAME,
    DEFAULT_PROMPT,
    RUN_ADAPTER_DIR,
    SCORERS,
)
from panacea.serving import add_serve_parser
from panacea.serving.cli import positive_int as _positive_int

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from panacea.adapters import PanaceaModel
    from panacea.training import TrainConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        quiet_third_party_output()
        args.run(args)
    except (ValueError, OSError, RuntimeError, yaml.YAMLError) as error:
        print(f"panacea {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line, not a traceback through torch
        _close_progress_bars()
        kept = str(interrupt)  # what is kept and how to continue, where the command says (train, eval, demo)
        print(f"panacea {args.command}: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
    return 0


def _close_progress_bars() -> None:
    """Close the tqdm bars an interrupt left open, so each ends its line now rather than after our message at exit."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    for bar in list(tqdm._instances):  # the open bars; tqdm has no public accessor
        bar.close()


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """`--preference -0.2,1.2` as `--preference=-0.2,1.2`: argparse reads a value that starts with '-' and is not
    one plain number as an option, so the user would get "expected one argument" instead of λ's own error."""
    words, result = list(argv), []
    while words:
        word = words.pop(0)
        if word == "--preference" and words and words[0].startswith("-") and words[0] != "--":
            word = f"{word}={words.pop(0)}"
        result.append(word)
    return result


def quiet_third_party_output() -> None:
    """Keep a command's output to what panacea says: no loading bars, no warnings a user cannot act on."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    logging.getLogger("panacea").setLevel(logging.INFO)  # data and cache reports; progress bars come from tqdm
    # peft 0.21 reads a transformers 5 property that transformers has renamed.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class _CommandParser(argparse.ArgumentParser):
    """argparse before Python 3.12.7 (gh-59317) leaves an optional positional (nargs='?') empty when an option comes
    between it and the positional before it, and calls its word unrecognized: `panacea export RUN --preference 0.8,0.2
    OUT`. Here such a leftover word goes to the optional positional still at its default."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            unset = not action.option_strings and action.nargs == "?" and getattr(namespace, action.dest) is None
            if unset and extras and not extras[0].startswith("-"):
                setattr(namespace, action.dest, extras.pop(0))
        return namespace, extras


PREFERENCE_HELP = (
    "Weights on the simplex, in order (0.8,0.2) or by the adapter's preference names (helpful=0.8,harmless=0.2)."
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panacea", description="One model for every trade-off between objectives.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    demo = commands.add_parser(
        "demo",
        help="Train a config (a finished run is reused), score held-out pairs over the λ grid, print a table, "
        "write JSON and a plot, generate at each vertex and export the balanced trade-off as a peft LoRA.",
    )
    demo.add_argument("--config", default="configs/demo.yaml", help="A training config (default: %(default)s).")
    _add_set_argument(demo)
    demo.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help="The user message answered at each vertex (default: %(default)r)."
    )
    demo.set_defaults(run=_run_demo)

    training = commands.add_parser(
        "train",
        help="Train a Panacea adapter from a YAML config (with method: soups, the rewarded-soups baseline: one "
        "plain LoRA per dimension).",
    )
    training.add_argument("config", help="A YAML training config, e.g. configs/hh-2d.yaml.")
    _add_set_argument(training)
    training.add_argument(
        "--resume", action="store_true", help="Continue the run in output_dir from its last complete checkpoint."
    )
    training.add_argument(
        "--check",
        action="store_true",
        help="Check the config, and that training could start in output_dir (with --resume: that the run there was "
        "trained with this config), then exit without training or writing anything.",
    )
    training.set_defaults(run=_run_train)

    generate = commands.add_parser("generate", help="Answer a prompt at a preference.")
    _add_adapter_arguments(generate)
    generate.add_argument("prompt", help="The user message.")
    generate.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=64,
        help="New tokens in the answer, greedy (default: %(default)s).",
    )
    generate.set_defaults(run=_run_generate)

    evaluate = commands.add_parser(
        "eval",
        help="Score a trained run over the λ grid (cached per point, resumable), print the per-λ table and the "
        "front metrics, and write RUN/eval/results.json, results.md and front.png.",
    )
    evaluate.add_argument("run_dir", metavar="RUN", help="A training run folder (output_dir of `panacea train`).")
    evaluate.add_argument(
        "--grid",
        type=_points_per_edge,
        help="Points per simplex edge: 11 → 11 λs for m = 2, 66 for m = 3 (default: the run config's eval_grid).",
    )
    evaluate.add_argument(
        "--scorers",
        default="pairs",
        type=_parse_scorers,
        help=f"Comma-separated, from {', '.join(SCORERS)} (default: %(default)s).",
    )
    evaluate.add_argument(
        "--limit", type=int, help="At most this many pairs / prompts per evaluation set (default: all of them)."
    )
    evaluate.add_argument(
        "--max-prompts",
        type=int,
        help="Generations scorer: at most this many prompts per set; overrides --limit there (default: --limit).",
    )
    evaluate.add_argument(
        "--max-new-tokens",
        type=int,
        default=96,
        help="Generations scorer: new tokens per answer, greedy (default: %(default)s).",
    )
    evaluate.add_argument(
        "--concise-max-new-tokens",
        type=int,
        help="Generations scorer: the cap on the prompt sets that serve concise, when concise is a dimension, so "
        "that the length it rewards fits (default: --max-new-tokens).",
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=32, help="Generations scorer: rows per generate call (default: %(default)s)."
    )
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1, … (default: the run config's device).")
    evaluate.add_argument(
        "--soups-mode",
        choices=("ab", "delta", "both"),
        default="both",
        help="A rewarded-soups run only: interpolate A and B (ab, the authors' recipe), the updates (delta), or "
        "evaluate both, each into RUN/eval/<mode>/ (default: %(default)s).",
    )
    evaluate.add_argument(
        "--objective",
        help="The front's objective in the printed table, results.md's first front and the plot: pairs "
        "accuracy, win_probability or margin (a diagnostic); generations win_rate or reward. results.json holds "
        "every objective's front (default: each scorer's first: accuracy, win_rate).",
    )
    _add_split_argument(evaluate)
    _add_bootstrap_arguments(evaluate)
    evaluate.set_defaults(run=_run_eval)

    comparison = commands.add_parser(
        "compare",
        help="Compare evaluated runs (Panacea, rewarded soups, …): one table of front metrics against one shared "
        "reference point, training cost, adapter size and switch time, and one plot with every front.",
    )
    comparison.add_argument("runs", nargs="+", metavar="RUN", help="Run folders, each evaluated with `panacea eval`.")
    comparison.add_argument(
        "--scorer", default="pairs", choices=SCORERS, help="Whose objectives to compare (default: %(default)s)."
    )
    comparison.add_argument(
        "--out", default="runs/compare", help="Folder for compare.json/.md/.png (default: %(default)s)."
    )
    comparison.add_argument(
        "--reference",
        type=float,
        nargs="+",
        metavar="R",
        help="The hypervolume's reference point, one value per dimension in the runs' order (default: 0 in every "
        "objective for the bounded ones; for the margin diagnostic, per objective the minimum over every point of "
        "every run less 1 %% of its range).",
    )
    comparison.add_argument(
        "--objective",
        help="Which objective the fronts are compared on: pairs accuracy, win_probability or margin (a "
        "diagnostic); generations win_rate or reward (default: the scorer's first: accuracy, win_rate).",
    )
    comparison.add_argument(
        "--baseline",
        metavar="RUN",
        help="A run's folder name (both rows of a soups run) or a row's label: every other row gets its "
        "difference to it with a paired 95 %% interval and a verdict, win / tie / loss, decided by that interval "
        "(default: none, no differences).",
    )
    _add_split_argument(comparison)
    _add_bootstrap_arguments(comparison)
    comparison.set_defaults(run=_run_compare)

    export = commands.add_parser(
        "export",
        help="Write trade-offs as plain peft LoRA adapters: one λ (--preference), one LoRA per point of a λ grid for "
        "multi-LoRA servers such as vLLM and SGLang (--grid), or the m vertex LoRAs whose λ-weighted merge is any λ "
        "(--vertices; peft add_weighted_adapter 'cat', LoRAX 'linear').",
    )
    _add_adapter_arguments(export, preference=False)
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--preference",
        type=parse_preference,
        help=f"{PREFERENCE_HELP} One LoRA at this λ (default: none; one of --preference, --grid and --vertices is "
        "required).",
    )
    what.add_argument(
        "--grid",
        type=_points_per_edge,
        metavar="N",
        help="One LoRA per point of the simplex lattice with N points per edge (11 → 11 LoRAs for m = 2, 66 for "
        "m = 3), each in a subfolder named by its λ, plus index.json (λ → subfolder) to route each request to the "
        "nearest point (default: none; one of --preference, --grid and --vertices is required).",
    )
    what.add_argument(
        "--vertices",
        action="store_true",
        help="The m vertex LoRAs (λ = e_i, sharing lora_A), plus index.json: peft's add_weighted_adapter(..., "
        "weights=λ, combination_type='cat') of them is the model at λ, exactly.",
    )
    export.add_argument("output_dir", nargs="?", metavar="OUT", help="The folder to write: give it here or as --out.")
    export.add_argument(
        "--out", metavar="DIR", help="The folder to write, as OUT (default: OUT; one of the two is required)."
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace what the folder holds (refused by default when it holds anything: another export, your files); "
        "a Panacea adapter or a training run is never replaced.",
    )
    export.set_defaults(run=_run_export)

    add_serve_parser(commands)  # `panacea serve`: panacea.serving (its web stack loads only when it runs)
    return parser


def _add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set output_dir=runs/x --set dimensions.0.beta=0.2 (repeatable; "
        "default: the config as written).",
    )


def _add_adapter_arguments(parser: argparse.ArgumentParser, *, preference: bool = True) -> None:
    """The adapter, --preference (required; export offers it among other choices instead) and the base model."""
    parser.add_argument(
        "adapter",
        help=f"An adapter folder (written by PanaceaModel.save_pretrained), or a training run folder that holds "
        f"{RUN_ADAPTER_DIR}/.",
    )
    if preference:
        parser.add_argument("--preference", required=True, type=parse_preference, help=PREFERENCE_HELP)
    parser.add_argument(
        "--model", help="Base model, a Hub id or a folder (default: the one the adapter was saved from)."
    )
    parser.add_argument(
        "--dtype", default="float32", help="The base model's dtype: float32, bfloat16, … (default: %(default)s)."
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, … (default: %(default)s).")


def parse_preference(text: str) -> list[float] | dict[str, float]:
    """'0.8,0.2' -> [0.8, 0.2]; 'helpful=0.8,harmless=0.2' -> {'helpful': 0.8, 'harmless': 0.2}."""
    items = [item.strip() for item in text.split(",")]
    named = ["=" in item for item in items]
    if any(named) and not all(named):
        raise argparse.ArgumentTypeError(
            f"give every weight by name (helpful=0.8,harmless=0.2) or none (0.8,0.2), not a mix; got {text!r}"
        )
    try:
        if not any(named):
            return [float(item) for item in items]
        pairs = [item.split("=", 1) for item in items]
        weights = {name.strip(): float(weight) for name, weight in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.8,0.2 or name=weight pairs such as "
            f"helpful=0.8,harmless=0.2, got {text!r}"
        ) from None
    if len(weights) != len(pairs):
        names = [name.strip() for name, _ in pairs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise argparse.ArgumentTypeError(f"each name once, got {repeated} more than once in {text!r}")
    return weights


def _run_demo(args: argparse.Namespace) -> None:
    from panacea.demo import run_demo

    try:
        run_demo(args.config, args.overrides, prompt=args.prompt)
    except KeyboardInterrupt as interrupt:  # the demo resumes its runs and reads scored points from the cache
        kept = str(interrupt) or "nothing half-written"
        raise KeyboardInterrupt(f"{kept}; run the same command again to continue") from interrupt


def _parse_scorers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCORERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scorer(s) {unknown or text!r}; choose from {', '.join(SCORERS)}")
    return names


def _version() -> str:
    """The installed distribution's version (panacea-align), without importing the package's heavy parts."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("panacea-align")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def _add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resamples",
        type=_positive_int,
        default=BOOTSTRAP_RESAMPLES,
        help="Bootstrap resamples behind every 95 %% interval (paired over prompts; default: %(default)s).",
    )
    parser.add_argument(
        "--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="The resamples' seed (default: %(default)s)."
    )


def _add_split_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="test: the config's held-out eval sources and the test prompt sets, in RUN/eval/. validation: for "
        "tuning, the validation pairs carved from each dimension's train files and the validation prompt sets "
        "(docs/evaluation.md), in RUN/eval-validation/; the run must have trained on split 'fit' "
        "(default: %(default)s).",
    )


def _run_eval(args: argparse.Namespace) -> None:
    from panacea.eval.report import format_front
    from panacea.eval.sweep import FRONT_PNG, RESULTS_JSON, RESULTS_MD, eval_folder, evaluate_path, is_soups_run

    for flag, value in (("--limit", args.limit), ("--max-prompts", args.max_prompts)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive number of pairs / prompts, got {value}.")
    for flag, value in (
        ("--max-new-tokens", args.max_new_tokens),
        ("--concise-max-new-tokens", args.concise_max_new_tokens),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive number of tokens, got {value}.")
    modes = [None]
    if is_soups_run(args.run_dir):
        modes = ["ab", "delta"] if args.soups_mode == "both" else [args.soups_mode]
    try:
        for mode in modes:
            document = evaluate_path(
                args.run_dir,
                grid_points=args.grid,
                scorers=args.scorers,
                limit=args.limit,
                max_prompts=args.max_prompts,
                max_new_tokens=args.max_new_tokens,
                concise_max_new_tokens=args.concise_max_new_tokens,
                batch_size=args.batch_size,
                device=args.device,
                mode=mode or "ab",
                objective=args.objective,
                resamples=args.resamples,
                seed=args.bootstrap_seed,
                split=args.split,
            )
            eval_dir = Path(args.run_dir) / eval_folder(args.split) / (mode or "")
            print(format_front(document))
            print(f"\nwrote {eval_dir / RESULTS_JSON}, {eval_dir / RESULTS_MD} and the plot {eval_dir / FRONT_PNG}\n")
    except KeyboardInterrupt as interrupt:  # a sweep says how many points it cached; every point is cached when done
        kept = str(interrupt) or "every grid point scored so far is cached"
        raise KeyboardInterrupt(f"{kept}; run the same command again to continue") from interrupt


def _run_compare(args: argparse.Namespace) -> None:
    from panacea.eval.compare import compare_paths, format_comparison

    comparison = compare_paths(
        args.runs,
        scorer=args.scorer,
        output_dir=args.out,
        reference=args.reference,
        objective=args.objective,
        baseline=args.baseline,
        resamples=args.resamples,
        seed=args.bootstrap_seed,
        split=args.split,
    )
    out = Path(args.out)
    print(format_comparison(comparison))
    print(f"\nwrote {out / 'compare.json'}, {out / 'compare.md'} and the plot {out / 'compare.png'}")


def _run_train(args: argparse.Namespace) -> None:
    from panacea.training import TrainConfig

    config = TrainConfig.from_yaml(args.config, args.overrides)
    if args.check:
        print(_check(config, args.config, resume=args.resume))
        return
    try:
        print(_train(config, resume=args.resume))
    except KeyboardInterrupt as interrupt:
        raise KeyboardInterrupt(_resume_hint(config, args)) from interrupt


def _check(config: TrainConfig, path: str, *, resume: bool) -> str:
    """`panacea train --check`: what training `config` in its output_dir would do, in one line; the errors training
    would raise there (a stranger's folder, a run trained with another config) are raised, nothing is written."""
    from panacea.base_model import local_model_path
    from panacea.training.trainer import CONFIG_FILE, DATA_FILE, training_data, validate_output_dir

    output_dir = Path(config.output_dir)
    validate_output_dir(config, output_dir, resume)
    local_model_path(config.model)  # a missing local model folder is refused now, not at start-up
    if (output_dir / CONFIG_FILE).is_file():
        data = "and data" if (output_dir / DATA_FILE).is_file() else "(its data by path: trained before data.json)"
        return f"{path}: the run in {output_dir} was trained with this config {data} (--resume continues or reuses it)"
    data = training_data(config)["data"]  # reads every file it trains on: a data error is raised now, not at start-up
    reads = "; ".join(f"{what} {entry['count']}" for what, entry in data.items())
    return f"{path}: a valid config ({reads or 'no data files'}); {output_dir} holds no run yet (training starts there)"


def _train(config: TrainConfig, *, resume: bool) -> str:
    """Train `config`; what was trained, in one line."""
    from panacea.training import train

    if config.method == "soups":  # the rewarded-soups baseline: one plain LoRA per dimension
        from panacea.training.soups import train_soups

        manifest = train_soups(config, resume=resume).manifest
        total = manifest["total"]
        return (
            f"trained {len(manifest['runs'])} rewarded-soups LoRAs ({manifest['budget']} budget: {total['steps']} "
            f"steps, {total['tokens']:,} tokens, {total['train_seconds'] / 60:.1f} min of steps); "
            f"manifest in {Path(config.output_dir) / 'manifest.json'}"
        )
    result = train(config, resume=resume)
    return (
        f"trained {result.state.step} steps ({result.state.tokens_seen:,} tokens, "
        f"{result.state.train_seconds / 60:.1f} min of steps); adapter in {result.output_dir / RUN_ADAPTER_DIR}"
    )


def _resume_hint(config: TrainConfig, args: argparse.Namespace) -> str:
    """Where an interrupted run stands (checkpoints and adapters are written atomically: nothing half-written) and
    the user's own command, with --resume, that continues it."""
    from panacea.training.checkpoint import latest_checkpoint

    run, where = config, ""
    if config.method == "soups":  # the member in training: the first whose adapter is not saved yet
        from panacea.training.soups import member_config

        members = [member_config(config, name) for name in config.dimension_names]
        run = next(
            (member for member in members if not (Path(member.output_dir) / RUN_ADAPTER_DIR).is_dir()), members[-1]
        )
        where = f" of {run.output_dir}"
    checkpoint = latest_checkpoint(run.output_dir)
    if checkpoint is None:
        kept = f"no checkpoint{where} yet (the first comes at step {min(run.save_steps, run.max_steps)})"
    else:
        step = checkpoint.name.removeprefix("step-")  # checkpoints/step-N/
        kept = f"the last checkpoint{where} is step {step} of {run.max_steps}"
    command = ["panacea", "train", args.config, *(word for item in args.overrides for word in ("--set", item))]
    return f"nothing half-written, {kept}; resume with `{shlex.join([*command, '--resume'])}`"


def adapter_folder_of(path: str | Path) -> Path:
    """`path` if it is an adapter folder, else `path/adapter` of a training run; one error naming both if neither."""
    from panacea.adapters.serialization import adapter_folder

    path, folder = Path(path), adapter_folder(path)
    if (folder / CONFIG_NAME).is_file():
        return folder
    candidates = [path, path / RUN_ADAPTER_DIR]
    raise FileNotFoundError(
        f"no Panacea adapter at {path}: neither {candidates[0] / CONFIG_NAME} nor {candidates[1] / CONFIG_NAME} "
        "exists. Pass a folder written by PanaceaModel.save_pretrained, or a training run folder that holds "
        f"{RUN_ADAPTER_DIR}/."
    )


def _load_adapter(args: argparse.Namespace) -> tuple[PanaceaModel, PreTrainedTokenizerBase]:
    """The saved adapter on its base model: --model, else the name recorded in the adapter's fingerprint."""
    from panacea.preferences import validate_preference

    folder = adapter_folder_of(args.adapter)
    saved = read_json(folder / CONFIG_NAME)
    adapter = saved.get("adapter") if isinstance(saved.get("adapter"), dict) else {}
    if args.preference is not None and isinstance(adapter.get("num_preferences"), int):  # before the model loads
        validate_preference(args.preference, adapter["num_preferences"], names=adapter.get("preference_names"))
    return load_on_its_base(folder, saved, args.model, dtype=args.dtype, device=args.device)


def load_on_its_base(
    folder: Path, saved: dict, model: str | None, *, dtype: str, device: str
) -> tuple[PanaceaModel, PreTrainedTokenizerBase]:
    """The adapter in `folder` (`saved`: its adapter_config.json) on `model`, else the base its fingerprint names."""
    from panacea.adapters import PanaceaModel
    from panacea.base_model import load_base_model

    fingerprint = saved.get("base_model") or {}
    model_name = model or (fingerprint.get("name_or_path") if isinstance(fingerprint, dict) else None)
    if not model_name:
        raise ValueError(f"{folder} does not record which base model it was saved from; pass --model.")
    base_model, tokenizer = load_base_model(model_name, dtype=dtype, device=device)
    return PanaceaModel.from_pretrained(base_model, folder), tokenizer


def _run_generate(args: argparse.Namespace) -> None:
    from panacea.generation import generate_text

    model, tokenizer = _load_adapter(args)
    print(generate_text(model, tokenizer, args.prompt, args.preference, args.max_new_tokens))


def _points_per_edge(text: str) -> int:
    """`--grid N`: a whole number of lattice points per simplex edge, at least the edge's 2 ends."""
    try:
        points = int(text)
    except ValueError:
        points = 0
    if points < 2:
        raise argparse.ArgumentTypeError(
            f"expected the points per simplex edge, a whole number of at least 2 (the two vertices), got {text!r}"
        )
    return points


def _run_export(args: argparse.Namespace) -> None:
    from panacea.adapters.serialization import INDEX_NAME, check_export_target

    if (args.output_dir is None) == (args.out is None):
        given = "both OUT and --out" if args.out else "neither OUT nor --out"
        raise ValueError(f"give the folder to write once, as OUT or as --out DIR; got {given}.")
    output_dir = args.out or args.output_dir
    check_export_target(output_dir, args.overwrite)  # before the base model loads (seconds); never over an adapter
    model, _ = _load_adapter(args)
    if args.preference is not None:
        model.export_lora(args.preference, output_dir, overwrite=args.overwrite)
        print(f"wrote a peft LoRA for λ = {_format_preference(args.preference)} to {output_dir}")
        return
    if args.grid is not None:
        index = model.export_lora_grid(args.grid, output_dir, overwrite=args.overwrite)
        what = f"one per point of the grid with {args.grid} points per edge"
    else:
        index = model.export_vertex_loras(output_dir, overwrite=args.overwrite)
        what = "one per vertex; merge them at λ with peft's add_weighted_adapter(..., combination_type='cat')"
    print(
        f"wrote {len(index['adapters'])} peft LoRAs of rank {index['rank']} to {output_dir} ({what}); "
        f"{Path(output_dir) / INDEX_NAME} says which λ each subfolder holds"
    )


def _format_preference(preference: list[float] | dict[str, float]) -> str:
    """As the user wrote it: '0.8,0.2' or 'helpful=0.8,harmless=0.2'."""
    if isinstance(preference, dict):
        return ",".join(f"{name}={weight:g}" for name, weight in preference.items())
    return ",".join(f"{weight:g}" for weight in preference)


if __name__ == "__main__":
    sys.exit(main())
