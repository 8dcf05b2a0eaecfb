"""`panacea eval RUN`: score a trained run over the simplex-lattice grid, cache every point, measure the front.

For each scorer (`pairs`, `generations`; panacea.eval.scorers) the sweep asks for the points of the grid
not yet in the run's cache, a few at a time (each call scores them together in mixed-preference batches),
writes each point's result to `RUN/eval/cache/<scorer>-<key>/<λ>.json` as soon as it has it, and then
computes the front metrics of the scorer's per-dimension objectives (panacea.eval.metrics). A rerun after
an interrupt finds the finished points and scores only the rest. The cache key hashes the adapter's
weights, the base model's (a strided sample), the device type and everything the scorer's numbers depend on,
so a retrained run, a changed base model, changed settings or another device never read stale results (a front
is never a mix of CPU and CUDA points).

Outputs, in RUN/eval/: `results.json` (every point, the metrics with their reference point, the decoding
settings and seeds), `results.md` (the per-λ tables and the metrics) and `front.png`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from panacea.adapters import PanaceaModel, SoupModel, read_soups_manifest
from panacea.adapters.serialization import CONFIG_NAME, RUN_ADAPTER_DIR, WEIGHTS_NAME
from panacea.adapters.soups import MANIFEST_NAME as SOUPS_MANIFEST
from panacea.training import TrainConfig
from panacea.training.checkpoint import STATE_FILE, latest_checkpoint
from panacea.training.reference import base_model_digest
from panacea.training.trainer import CONFIG_FILE, follow_moved_run
from torch import Tensor
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from panacea._io import file_sha256, read_json, write_json, write_text
from panacea._names import SCORER_OBJECTIVES, SCORERS
from panacea.base_model import load_base_model
from panacea.data import PROMPT_MAPPABLE_KEYS, PromptSource, load_prompt_source
from panacea.preferences import simplex_grid

from .bootstrap import RESAMPLES, SEED, bootstrap_fronts, point_statistics, prompt_cluster, statistic_intervals
from .report import format_front, plot_front
from .scorers import HELD_OUT_SPLITS, PairsScorer, validation_sources
from .steering import vertex_index

RESULTS_JSON, RESULTS_MD, FRONT_PNG = "results.json", "results.md", "front.png"
# What a cached point holds: 2 = every item's values (per-pair margins, per-prompt scores) for the bootstrap, so
# a point cached before (summaries only) is scored again rather than read.
POINT_FORMAT = 2


def run_label(name: str, kind: str = "panacea", mode: str | None = None) -> str:
    """How tables and plots name a front: the run's name, kind and soups mode, e.g. `soups-hh-2d (soups, ab)`."""
    return f"{name} ({kind}{', ' + mode if mode else ''})"


def eval_folder(split: str = "test") -> str:
    """The name of a run's evaluation folder: `eval` for the held-out test split, `eval-validation` for tuning."""
    return "eval" if split == "test" else f"eval-{split}"


@dataclass
class LoadedRun:
    """A run folder's model at any λ: its config, the base model with what it trained, the tokenizer.

    `kind` is "panacea" (one adapter, any mix of λs in a batch) or "soups" (the rewarded-soups baseline,
    its LoRAs interpolated in `mode` "ab" or "delta": one λ per call).
    """

    path: Path
    config: TrainConfig
    model: Any  # PanaceaModel, or SoupModel for a soups run
    tokenizer: Any
    autocast: Callable[[], contextlib.AbstractContextManager]
    weights_digest: str  # sha256 of the adapter weights (and the soup mode): part of every cache key
    kind: str = "panacea"
    mode: str | None = None
    vertex_digest: str | None = None  # a soups run's members without the mode: a vertex is one member in every mode
    split: str = "test"  # what the scorers hold out: "test" (the config's eval sources) or "validation" (tuning)

    @property
    def dimensions(self) -> list[str]:
        return self.config.dimension_names

    @property
    def mixed(self) -> bool:
        """Whether one batch may hold rows at different λs (Panacea: yes; a soup serves one λ at a time)."""
        return self.kind == "panacea"

    @property
    def label(self) -> str:
        return run_label(self.path.name, self.kind, self.mode)

    @property
    def eval_dir(self) -> Path:
        """RUN/eval, or RUN/eval/<mode> for each interpolation mode of a soups run; RUN/eval-validation[/<mode>]
        for the validation split, so that tuning numbers never stand where the published ones do."""
        root = self.path / eval_folder(self.split)
        return root / self.mode if self.mode else root

    @classmethod
    def from_training(cls, result, config: TrainConfig) -> LoadedRun:
        """The run `train` just finished (its `TrainResult`), without loading it again."""
        weights = result.output_dir / RUN_ADAPTER_DIR / WEIGHTS_NAME
        return cls(result.output_dir, config, result.model, result.tokenizer, result.autocast, file_sha256(weights))


def is_soups_run(path: str | Path) -> bool:
    return (Path(path) / SOUPS_MANIFEST).is_file()


def load_run(path: str | Path, *, device: str | None = None, mode: str = "ab") -> LoadedRun:
    """The run in `path` (a `panacea train` output folder); one clear error if it is not a finished run.

    A rewarded-soups run (it holds manifest.json) loads as a SoupModel interpolating in `mode`.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}.")
    config_file, adapter = path / CONFIG_FILE, path / RUN_ADAPTER_DIR
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a training run: {config_file} is missing.")
    config = follow_moved_run(TrainConfig.from_yaml(config_file), path)
    if is_soups_run(path):
        manifest = read_soups_manifest(path)  # refuses an unfinished or damaged run
        base_model, tokenizer = load_base_model(config.model, dtype=config.dtype, device=device or config.device)
        model = SoupModel.from_run(base_model, path, mode, dimensions=config.dimension_names)
        members = [path / manifest["runs"][name]["adapter"] / WEIGHTS_NAME for name in config.dimension_names]
        members_digest = "".join(file_sha256(file) for file in members)
        digest = hashlib.sha256((members_digest + mode).encode()).hexdigest()
        vertex_digest = hashlib.sha256(members_digest.encode()).hexdigest()
        autocast = mixed_precision_context(config, model.device)
        return LoadedRun(path, config, model, tokenizer, autocast, digest, "soups", mode, vertex_digest)
    if not (adapter / CONFIG_NAME).is_file() or not (adapter / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{path} holds no trained adapter ({adapter / WEIGHTS_NAME} is missing): the run has not finished; "
            f"resume it with `panacea train {config_file} --resume`."
        )
    base_model, tokenizer = load_base_model(config.model, dtype=config.dtype, device=device or config.device)
    model = PanaceaModel.from_pretrained(base_model, adapter).eval()
    return LoadedRun(
        path,
        config,
        model,
        tokenizer,
        mixed_precision_context(config, model.device),
        file_sha256(adapter / WEIGHTS_NAME),
    )


def training_summary(run: LoadedRun) -> dict:
    """What the run cost and weighs: optimizer steps, tokens, minutes of steps, adapter bytes on disk."""
    if run.kind == "soups":
        manifest = read_soups_manifest(run.path)
        total = manifest["total"]
        folders = [run.path / entry["adapter"] for entry in manifest["runs"].values()]
        steps, tokens, seconds = total["steps"], total["tokens"], total["train_seconds"]
        budget = manifest.get("budget")
    else:
        checkpoint = latest_checkpoint(run.path)
        state = read_json(checkpoint / STATE_FILE) if checkpoint else {}
        folders = [run.path / RUN_ADAPTER_DIR]
        steps, tokens, seconds, budget = state.get("step"), state.get("tokens_seen"), state.get("train_seconds"), None
    size = sum(file.stat().st_size for folder in folders for file in folder.iterdir() if file.is_file())
    return {"steps": steps, "tokens": tokens, "train_seconds": seconds, "adapter_bytes": size, "budget": budget}


def switch_seconds(model, grid: Tensor) -> float:
    """Median wall time of setting each λ of `grid` in turn: what serving a new trade-off costs before a forward."""
    times = []
    for preference in grid:
        started = time.perf_counter()
        model.set_preference(preference)
        if preference.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(torch.tensor(times).median())


def mixed_precision_context(
    config: TrainConfig, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    """The run's autocast for evaluation (bf16/fp16 when it trained so), as `accelerator.autocast` gives it."""
    if config.mixed_precision == "no":
        return contextlib.nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[config.mixed_precision]
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def evaluation_grid(num_dimensions: int, num_points: int) -> Tensor:
    """The simplex-lattice grid, refused when it has no interior point (only vertices and edges say little)."""
    if num_points - 1 < num_dimensions:
        raise ValueError(
            f"--grid {num_points} gives no interior point for {num_dimensions} dimensions (its step is "
            f"1/{num_points - 1}); use --grid {num_dimensions + 1} or more."
        )
    return simplex_grid(num_dimensions, num_points)


class PointCache:
    """One JSON file per grid point in `folder`, written atomically; a damaged file counts as missing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, preference: Sequence[float]) -> Path:
        return self.folder / ("-".join(f"{weight:.4f}" for weight in preference) + ".json")

    def get(self, preference: Sequence[float]) -> dict | None:
        file = self.path(preference)
        try:
            return read_json(file) if file.is_file() else None
        except (ValueError, OSError):
            return None

    def put(self, preference: Sequence[float], result: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.path(preference), result)


# The scorers whose points a results document holds whole (the pairs scorer's per-pair values); the generations
# scorer's answers stay in the cache (its detectors judge them whenever a point is read), out of results.json.
WHOLE_IN_RESULTS = ("pairs",)


def whole_points(document: dict) -> list[tuple[Path, list[float], dict]]:
    """The points a results document holds whole, each with its file's path relative to the eval folder (the cache
    folder the document names, the λ's file name) and the point as its scorer cached it."""
    found = []
    for name, entry in document.get("scorers", {}).items():
        if name not in WHOLE_IN_RESULTS or not entry.get("cache"):
            continue
        cache = PointCache(Path("cache") / Path(entry["cache"]).name)
        for preference, point in zip(document["grid"], entry["points"], strict=True):
            cached = {key: value for key, value in point.items() if key != "objectives"}
            found.append((cache.path(preference), preference, cached))
    return found


def restore_points(results: str | Path, eval_dir: str | Path) -> int:
    """The points of a results document (a published results.json) back into the point cache of `eval_dir` (the run's
    eval folder, or a soups mode's), where it lacks them: each as its scorer cached it, in the cache folder the
    document names, so re-evaluating a published run on another machine scores only what the document cannot give
    (e.g. the generations, or a changed scorer). A point is read back only where the scorer's settings and the
    adapter still give that folder's key. Returns how many points were written."""
    written = 0
    for path, preference, point in whole_points(read_json(results)):
        cache = PointCache(Path(eval_dir) / path.parent)
        if cache.get(preference) is None:
            cache.put(preference, point)
            written += 1
    return written


def scored_on(run: LoadedRun) -> dict[str, str]:
    """What a front's numbers depend on besides the scorer's settings and the adapter: the base model's weights, the
    device and the dtype (kernels agree across them only to rounding; greedy answers can then differ). A results
    document keeps them with the scorer's settings, so `panacea compare` refuses fronts scored on different ones."""
    dtype = next(run.model.base_model.parameters()).dtype
    return {"base_model": base_model_digest(run.model), "device": run.model.device.type, "dtype": str(dtype)}


def sweep(scorer, run: LoadedRun, grid: Tensor, *, progress: bool = True) -> tuple[list[dict], Path]:
    """Every grid point's result from `scorer`, read from the cache or computed (and cached) now; the cache folder.

    A soups run's vertices are also cached across its modes (RUN/eval/cache/): at a vertex every mode serves that
    dimension's LoRA alone, so the second mode reads them instead of scoring them again. Every point is also in the
    mode's own folder, the one returned. A KeyboardInterrupt (Ctrl-C) comes out saying how many points are cached.
    """
    # the base model's weights (a changed base behind the same name) and the device (CPU and CUDA kernels agree
    # only to rounding, and one front should not mix the two) are not in the scorer's settings
    settings = {**scorer.cache_settings(), **scored_on(run), "point_format": POINT_FORMAT}
    if settings["dtype"] == str(torch.float32):  # not in the key of the fp32 points cached before 2026-12-05; any
        settings.pop("dtype")  # other dtype has keys of its own (a bf16 point was read back as fp32's before)
    key = cache_key(settings, run.weights_digest)
    cache = PointCache(run.eval_dir / "cache" / f"{scorer.name}-{key[:16]}")
    vertex_cache = None
    if run.vertex_digest is not None:
        vertex_key = cache_key(settings, run.vertex_digest)
        vertex_cache = PointCache(run.eval_dir.parent / "cache" / f"{scorer.name}-vertex-{vertex_key[:16]}")
    points = grid.tolist()
    vertices = {vertex_index(grid, i) for i in range(grid.shape[1])} if vertex_cache is not None else set()
    shared = [index in vertices for index in range(len(points))]
    results = []
    for point, is_shared in zip(points, shared, strict=True):
        result = cache.get(point)
        if result is None and is_shared:
            result = vertex_cache.get(point)
            if result is not None:
                cache.put(point, result)
        elif is_shared and vertex_cache.get(point) is None:  # e.g. restored into this mode's folder alone (a fresh
            vertex_cache.put(point, result)  # machine, one mode published): the next mode reads it instead of scoring
        results.append(None if result is None else scorer.rejudge(result))
    todo = [index for index, result in enumerate(results) if result is None]
    per_call = scorer.points_per_call if run.mixed else 1  # a soup serves one λ per call
    try:
        with (
            tqdm(total=len(points), initial=len(points) - len(todo), desc=scorer.name, disable=not progress) as bar,
            _logs_above_the_bar() if progress else contextlib.nullcontext(),
        ):
            for start in range(0, len(todo), per_call):
                chunk = todo[start : start + per_call]
                started = time.perf_counter()
                scored = scorer.score(run.model, grid[chunk])
                seconds = (time.perf_counter() - started) / len(chunk)  # a batch of λs shares its time evenly
                for index, result in zip(chunk, scored, strict=True):
                    result["seconds"] = round(seconds, 2)
                    cache.put(points[index], result)
                    if shared[index]:
                        vertex_cache.put(points[index], result)
                    results[index] = result
                    bar.update()
    except KeyboardInterrupt as interrupt:  # every point is written atomically: what is cached is whole
        cached = sum(cache.path(point).is_file() for point in points)
        raise KeyboardInterrupt(
            f"the {cached} of {len(points)} {scorer.name} grid points scored so far are cached in {cache.folder}"
        ) from interrupt
    return results, cache.folder


def _logs_above_the_bar() -> contextlib.AbstractContextManager:
    """Send console log records (e.g. "reference log-probs … computing once") through `tqdm.write`, above the bar
    rather than into its line. Only a console handler the root logger has is redirected: tqdm's redirect would add
    one where there is none, printing what a user logs to a file only."""
    console = (handler for handler in logging.root.handlers if isinstance(handler, logging.StreamHandler))
    if any(handler.stream in (sys.stdout, sys.stderr) for handler in console):
        return logging_redirect_tqdm(tqdm_class=tqdm)
    return contextlib.nullcontext()


def scoring_seconds(results: Sequence[dict]) -> float | None:
    """What scoring the front took, summed over its points whenever each was scored (in this call or an earlier
    one, or in the other soups mode for a shared vertex); None when a point's result does not record it."""
    if not all(isinstance(result.get("seconds"), (int, float)) for result in results):
        return None
    return round(sum(result["seconds"] for result in results), 2)


def cache_key(settings: dict, weights_digest: str) -> str:
    return hashlib.sha256(
        json.dumps({"settings": settings, "adapter": weights_digest}, sort_keys=True).encode()
    ).hexdigest()


def evaluate_run(
    run: LoadedRun,
    scorers: Sequence,
    *,
    grid_points: int = 11,
    reference: dict[str, Sequence[float]] | None = None,
    progress: bool = True,
    extra: dict | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    objective: str | None = None,
) -> dict:
    """Sweep every scorer over the grid, measure each front with intervals, write results.json / .md / front.png.

    Per scorer, every objective it defines gets its front (the per-point objectives with 95 % intervals and the
    front metrics with theirs: panacea.eval.bootstrap); `points[i]["objectives"]` and `metrics` are those of the
    scorer's default objective. `reference`: {scorer: r} replaces the reference point of every objective.
    """
    started = time.perf_counter()
    grid = evaluation_grid(len(run.dimensions), grid_points)
    document: dict[str, Any] = {
        "run": str(run.path),
        "label": run.label,
        "kind": run.kind,
        "mode": run.mode,
        "dimensions": run.dimensions,
        "grid": grid.tolist(),
        "seed": run.config.seed,
        "split": run.split,
        "adapter_digest": run.weights_digest,  # which trained weights (and soups mode) these numbers are of
        **(extra or {}),
        "scorers": {},
    }
    for scorer in scorers:
        results, cached_in = sweep(scorer, run, grid, progress=progress)
        objectives = scorer.objectives()
        default = objective if objective in objectives else scorer.default_objective
        entry = {
            "settings": {**scorer.settings(), **scored_on(run)},
            "objective": objectives[default]["description"],
            "default_objective": default,
            "objectives": objectives,
            "items": scorer.items(),
            "cache": str(cached_in),  # each point's file there also holds what it was scored on (e.g. the answers)
            "points": [{key: value for key, value in point.items() if key != "responses"} for point in results],
            "seconds": scoring_seconds(results),
            **scorer.summary(),
        }
        given = (reference or {}).get(scorer.name)
        entry["fronts"] = {}
        for name in entry["objectives"]:  # not `objective`: that is the caller's choice for every scorer
            measured = bootstrap_fronts(
                [entry], run.dimensions, grid.tolist(), name, given, resamples=resamples, seed=seed
            )
            front = measured["fronts"][0]
            entry["fronts"][name] = {
                **front,
                "reference": measured["reference"],
                "reference_policy": measured["reference_policy"],
                "bootstrap": measured["bootstrap"],
            }
        if hasattr(scorer, "statistics"):  # reported beside the objectives (generations: refusal, loops, …)
            entry["statistics"] = statistic_intervals(entry, scorer.statistics(), resamples=resamples, seed=seed)
        if hasattr(scorer, "base_point"):  # generations: the base model's own statistics, the anchor beside the front
            entry["base"] = base_statistics(entry, scorer, run.model, resamples=resamples, seed=seed)
        shown = entry["fronts"][default]
        for point, values in zip(entry["points"], shown["objectives"], strict=True):
            point["objectives"] = dict(zip(run.dimensions, values, strict=True))
        entry["metrics"] = shown["metrics"]
        document["scorers"][scorer.name] = entry
    document["training"] = training_summary(run)
    document["switch_seconds"] = switch_seconds(run.model, grid)
    document["seconds"] = round(time.perf_counter() - started, 1)
    eval_dir = run.eval_dir
    write_json(eval_dir / RESULTS_JSON, document)
    write_text(eval_dir / RESULTS_MD, format_front(document) + "\n")
    plot_front(document, eval_dir / FRONT_PNG)
    return document


def base_statistics(entry: dict, scorer, model, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """A scorer entry's `base`: the base model's own answers (adapter off) as one point (`scorer.base_point`: every
    answer's values, without the answers, as a grid point is kept; they are in the base answers' cache), and each of
    the scorer's statistics on that point with its interval, by `statistic_intervals` on the entry's items with the
    resamples its grid points' statistics use (`values` and `intervals` hold one entry each). `panacea compare`
    redraws them from the point under its own resamples."""
    point = {key: value for key, value in scorer.base_point(model).items() if key != "responses"}
    statistics = point_statistics(entry["items"], point, scorer.statistics(), resamples=resamples, seed=seed)
    return {"point": point, "statistics": statistics}


def refuse_trained_on_validation(config: TrainConfig, scorers: Sequence[str] = ("pairs",)) -> None:
    """`--split validation` scores only a run that never trained on a validation prompt, whichever scorer: every pair
    source on 'fit' (`validation_sources`), and for RL, none of the prompts it rolled out on among the prompts the
    scorers judge it on: the validation prompts of the files its dimensions' pairs are scored from (read as those
    sources read them: columns, dim) and, with the generations scorer, of its validation prompt sets. One error
    naming the source otherwise."""
    scored = validation_sources(config)
    if not config.is_rl:
        return
    files = {(source.path, source.dim): source for sources in scored.values() for source in sources}  # each once
    held_out = {
        prompt_cluster(record.prompt)
        for source in files.values()
        for record in load_prompt_source(
            PromptSource(
                source.path,
                split="validation",
                dim=source.dim,
                columns={key: name for key, name in source.columns.items() if key in PROMPT_MAPPABLE_KEYS},
            )
        )
    }
    if "generations" in scorers:
        from .generations import VALIDATION_PROMPT_SETS, load_prompts

        sets = VALIDATION_PROMPT_SETS
        held_out |= {prompt_cluster(row["prompt"]) for prompt_set in sets for row in load_prompts(prompt_set)}
    for index, source in enumerate(config.rl.prompts):
        if seen := sum(prompt_cluster(record.prompt) in held_out for record in load_prompt_source(source)):
            raise ValueError(
                f"rl.prompts.{index} ({source.path}, split {source.split!r}) holds {seen} of the validation prompts: "
                "score on validation only a run that rolled out on the 'fit' prompts, e.g. "
                f"--set rl.prompts.{index}.split=fit."
            )


def evaluate_path(
    path: str | Path,
    *,
    grid_points: int | None = None,
    scorers: Sequence[str] = ("pairs",),
    limit: int | None = None,
    max_prompts: int | None = None,
    max_new_tokens: int = 96,
    concise_max_new_tokens: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    mode: str = "ab",
    progress: bool = True,
    objective: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    split: str = "test",
) -> dict:
    """`panacea eval`: load the run in `path` (a soups run interpolating in `mode`), build the scorers, evaluate.

    `grid_points`: None takes the run config's `eval_grid`. `limit` cuts every pair and prompt set, `max_prompts`
    the prompt sets only (it wins over `limit` there). `concise_max_new_tokens`: the
    cap of the prompt sets that serve concise (default `max_new_tokens`). `objective`: the front shown first (and in
    `points[i]["objectives"]`) for every scorer that defines it; each scorer's own default otherwise. `split`
    "validation" scores the validation pairs and prompt sets instead of the held-out test ones (for tuning; the run
    must have trained on split 'fit'), into RUN/eval-validation/.
    """
    if split not in HELD_OUT_SPLITS:
        raise ValueError(f"--split must be one of {list(HELD_OUT_SPLITS)}, got {split!r}.")
    unknown = [name for name in scorers if name not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}; choose from {list(SCORERS)}.")
    if objective is not None and not any(objective in SCORER_OBJECTIVES[name] for name in scorers):
        known = sorted({name for scorer in scorers for name in SCORER_OBJECTIVES[scorer]})
        raise ValueError(f"--objective {objective!r} is not an objective of the scorers {list(scorers)}: {known}.")
    run = dataclasses.replace(load_run(path, device=device, mode=mode), split=split)
    if split == "validation":
        refuse_trained_on_validation(run.config, scorers)
    grid_points = run.config.eval_grid if grid_points is None else grid_points
    evaluation_grid(len(run.dimensions), grid_points)  # a grid without an interior point fails before any work
    built = []
    for name in scorers:
        if name == "pairs":
            built.append(PairsScorer.from_run(run, limit=limit))
        else:
            from .generations import GenerationsScorer

            built.append(
                GenerationsScorer.from_run(
                    run,
                    limit=max_prompts or limit,
                    max_new_tokens=max_new_tokens,
                    concise_max_new_tokens=concise_max_new_tokens,
                    batch_size=batch_size,
                )
            )
    return evaluate_run(
        run, built, grid_points=grid_points, progress=progress, objective=objective, resamples=resamples, seed=seed
    )
