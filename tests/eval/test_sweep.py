"""`panacea eval`'s sweep on a tiny trained run: outputs, the per-point cache and resume, and bad input."""

import dataclasses
import gzip
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from panacea.eval import sweep as sweep_module
from panacea.eval.bootstrap import objective_values
from panacea.eval.scorers import PairSet, PairsScorer
from panacea.eval.sweep import evaluate_path, evaluation_grid, load_run, scored_on
from panacea.training import TrainConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from panacea._config import dataclass_from_dict
from tests.helpers import config_dict, make_workspace, train_tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("sweep"))


def test_eval_writes_results_markdown_and_plot(run_dir):
    document = evaluate_path(run_dir, grid_points=3, progress=False)
    assert document["grid"] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    pairs = document["scorers"]["pairs"]
    assert len(pairs["points"]) == 3 and set(pairs["points"][0]["objectives"]) == {"a", "b"}
    metrics = pairs["metrics"]
    assert metrics["num_points"] == 3 and len(metrics["reference"]) == 2 and metrics["hypervolume"] > 0
    for name in ("results.json", "results.md", "front.png"):
        assert (run_dir / "eval" / name).stat().st_size > 0
    written = json.loads((run_dir / "eval" / "results.json").read_text())["scorers"]["pairs"]["metrics"]
    assert json.dumps(written, sort_keys=True) == json.dumps(metrics, sort_keys=True)  # NaN ρ equal as text
    assert metrics["reference"] == [0.0, 0.0] and pairs["default_objective"] == "accuracy"
    for objective in ("accuracy", "win_probability", "margin"):
        front = pairs["fronts"][objective]
        for values, intervals in zip(front["objectives"], front["intervals"], strict=True):
            assert all(low <= v <= high for v, (low, high) in zip(values, intervals, strict=True))
        # the hypervolume of the front's own points above its reference, by the 2-D sweep of docs/algorithms.md
        (r1, r2), expected = front["reference"], 0.0
        height = r2
        for first, second in sorted(map(tuple, front["objectives"]), reverse=True):
            if first > r1 and second > height:
                expected, height = expected + (first - r1) * (second - height), second
        assert expected > 0 and front["metrics"]["hypervolume"] == pytest.approx(expected, abs=1e-12), objective
    shown = pairs["fronts"]["accuracy"]  # the default objective's front is the one in `points` and `metrics`
    assert [list(point["objectives"].values()) for point in pairs["points"]] == shown["objectives"]
    assert metrics["hypervolume"] == shown["metrics"]["hypervolume"]
    assert "hypervolume" in (run_dir / "eval" / "results.md").read_text()


def test_the_objective_pools_every_set_of_its_dimension(run_dir):
    """Two sets of unequal size per dimension: each objective is the mean over all their pairs, not of the sets."""
    run = load_run(run_dir)
    sets = PairsScorer.from_run(run).pair_sets
    # dimension a: its 4 pairs and another 2 of b's; dimension b: its 4 pairs alone
    two = [sets[0], PairSet("a", "other", sets[1].pairs[:2], sets[0].beta), sets[1]]
    scorer = PairsScorer(
        two,
        ["a", "b"],
        pad_token_id=run.tokenizer.pad_token_id,
        batch_size=4,
        reference_settings=PairsScorer.from_run(run).reference_settings,
    )
    points = scorer.score(run.model, torch.tensor([[1.0, 0.0], [0.3, 0.7]]))
    entry = {"objectives": scorer.objectives(), "items": scorer.items(), "points": points}
    for index, point in enumerate(points):
        margins = point["sets"]["a/a"]["values"]["margin"] + point["sets"]["a/other"]["values"]["margin"]
        assert len(margins) == 6
        pooled = {
            "accuracy": sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / 6,
            "win_probability": sum(1 / (1 + math.exp(-m)) for m in margins) / 6,
            "margin": sum(margins) / 6,
        }
        for objective, expected in pooled.items():
            assert objective_values(entry, ["a", "b"], objective)[index, 0] == pytest.approx(expected)


def test_a_rerun_reads_every_point_from_the_cache(run_dir, monkeypatch):
    first = evaluate_path(run_dir, grid_points=3, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached point was scored again")

    monkeypatch.setattr(PairsScorer, "score", refuse)
    again = evaluate_path(run_dir, grid_points=3, progress=False)
    assert again["scorers"]["pairs"]["points"] == first["scorers"]["pairs"]["points"]


def test_points_restored_from_a_published_document_are_read_not_scored_again(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    first = evaluate_path(run, grid_points=3, progress=False)
    published = tmp_path / "published.json"
    document = json.loads((run / "eval" / "results.json").read_text())
    cache = document["scorers"]["pairs"]["cache"]
    document["scorers"]["generations"] = {**document["scorers"]["pairs"], "cache": cache.replace("pairs-", "gen-")}
    published.write_text(json.dumps(document))
    shutil.rmtree(run / "eval")  # a fresh machine: only the published document is left
    assert sweep_module.restore_points(published, run / "eval") == 3
    assert sweep_module.restore_points(published, run / "eval") == 0  # only where the cache lacks a point
    assert [folder.name for folder in (run / "eval" / "cache").iterdir()] == [cache.rsplit("/", 1)[-1]]  # pairs only

    def refuse(*args, **kwargs):
        raise AssertionError("a restored point was scored again")

    monkeypatch.setattr(PairsScorer, "score", refuse)
    again = evaluate_path(run, grid_points=3, progress=False)
    assert again["scorers"]["pairs"]["points"] == first["scorers"]["pairs"]["points"]
    fronts = [json.dumps(document["scorers"]["pairs"]["fronts"], sort_keys=True) for document in (first, again)]
    assert fronts[0] == fronts[1]  # as text: a NaN (monotonicity of a flat front) is not equal to itself


def test_an_interrupted_sweep_resumes_with_the_points_it_lacks(run_dir, monkeypatch):
    scored, original = [], PairsScorer.score

    def interrupt_after_first_call(self, model, preferences):
        if scored:
            raise KeyboardInterrupt
        scored.append(preferences.tolist())
        return original(self, model, preferences)

    shutil.rmtree(run_dir / "eval" / "cache", ignore_errors=True)  # earlier tests cached some of these points
    monkeypatch.setattr(PairsScorer, "MAX_POINTS_PER_CALL", 2)
    monkeypatch.setattr(PairsScorer, "score", interrupt_after_first_call)
    with pytest.raises(KeyboardInterrupt):
        evaluate_path(run_dir, grid_points=5, progress=False)
    resumed = []

    def record(self, model, preferences):
        resumed.extend(preferences.tolist())
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    document = evaluate_path(run_dir, grid_points=5, progress=False)
    assert scored == [[[1.0, 0.0], [0.75, 0.25]]] and resumed == [[0.5, 0.5], [0.25, 0.75], [0.0, 1.0]]
    assert len(document["scorers"]["pairs"]["points"]) == 5


def test_the_scoring_time_is_the_points_own_not_this_calls(run_dir, monkeypatch):
    """A front scored over several calls, or re-rendered from its cache, still says what scoring it took."""
    original = PairsScorer.score

    def slow(self, model, preferences):
        time.sleep(0.2)  # a call of 2 λs: 0.1 s or more each; of 1 λ: 0.2 s or more
        return original(self, model, preferences)

    shutil.rmtree(run_dir / "eval" / "cache", ignore_errors=True)
    monkeypatch.setattr(PairsScorer, "MAX_POINTS_PER_CALL", 2)
    monkeypatch.setattr(PairsScorer, "score", slow)
    first = evaluate_path(run_dir, grid_points=3, progress=False)["scorers"]["pairs"]
    seconds = [point["seconds"] for point in first["points"]]
    assert seconds[0] == seconds[1] >= 0.1 and seconds[2] >= 0.2
    assert first["seconds"] == pytest.approx(sum(seconds))

    monkeypatch.setattr(PairsScorer, "score", lambda *args: pytest.fail("a cached point was scored again"))
    again = evaluate_path(run_dir, grid_points=3, progress=False)
    assert again["scorers"]["pairs"]["seconds"] == first["seconds"]  # read from the cache, not this call's time
    assert "seconds: " in (run_dir / "eval" / "results.md").read_text()

    cached = next((run_dir / "eval" / "cache").glob("*/*.json"))  # a point cached before points were timed
    cached.write_text(
        json.dumps({key: value for key, value in json.loads(cached.read_text()).items() if key != "seconds"})
    )
    assert evaluate_path(run_dir, grid_points=3, progress=False)["scorers"]["pairs"]["seconds"] is None


def test_cached_points_are_not_read_for_another_adapter(run_dir, tmp_path, monkeypatch):
    """The same run folder holding other adapter weights (retrained, or edited on disk) is scored again.

    Only the adapter changes: the base model, the scorer's settings and the device stay, so the weights' digest
    is the one part of the cache key that tells the two adapters apart.
    """
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("eval"))  # a folder of its own: other tests use run_dir
    grid = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    scored, original = [], PairsScorer.score

    def record(self, model, preferences):
        scored.extend(preferences.tolist())
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    first_document = evaluate_path(run, grid_points=3, progress=False)
    first = first_document["scorers"]["pairs"]
    assert scored == grid
    scored.clear()
    same = evaluate_path(run, grid_points=3, progress=False)["scorers"]["pairs"]
    assert scored == [] and same["points"] == first["points"]  # the same adapter: every point from the cache

    weights_file = run / "adapter" / "adapter_model.safetensors"
    with safe_open(weights_file, framework="pt") as handle:
        metadata = handle.metadata()
    generator = torch.Generator().manual_seed(0)
    weights = {
        name: tensor + 0.3 * torch.randn(tensor.shape, generator=generator) if name.endswith("lora_B") else tensor
        for name, tensor in load_file(weights_file).items()
    }
    save_file(weights, weights_file, metadata=metadata)
    other_document = evaluate_path(run, grid_points=3, progress=False)
    other = other_document["scorers"]["pairs"]
    assert scored == grid and other["cache"] != first["cache"]
    digests = [document["adapter_digest"] for document in (first_document, other_document)]
    assert len(set(digests)) == 2 and all(len(digest) == 64 for digest in digests)  # results name their weights
    for before, after in zip(first["points"], other["points"], strict=True):
        assert before["sets"].keys() == after["sets"].keys()
        for name in before["sets"]:
            margins = [point["sets"][name]["values"]["margin"] for point in (before, after)]
            assert all(x != y for x, y in zip(*margins, strict=True)), (name, margins)  # every pair scored anew


def test_points_cached_on_one_device_are_not_read_on_another(run_dir, monkeypatch):
    run = load_run(run_dir)
    scorer = PairsScorer.from_run(run)
    grid = evaluation_grid(2, 3)
    _, cpu_folder = sweep_module.sweep(scorer, run, grid, progress=False)

    class OnCuda:  # the same model, reporting another device; scoring itself stays on the CPU
        base_model = run.model.base_model
        device = torch.device("cuda")

    scored, original = [], PairsScorer.score

    def record(self, model, preferences):
        scored.extend(preferences.tolist())
        return original(self, run.model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    results, cuda_folder = sweep_module.sweep(scorer, dataclasses.replace(run, model=OnCuda()), grid, progress=False)
    assert cuda_folder != cpu_folder and scored == grid.tolist() and len(results) == 3


def test_points_cached_in_fp32_are_not_read_in_another_dtype(run_dir, monkeypatch):
    """The point key left the dtype out (fp32 points cached before 2026-12-05 lack it), so a bf16 front read fp32's
    points and called them bf16 (found by an independent review). fp32's folder is the one it was."""
    run = load_run(run_dir)
    scorer = PairsScorer.from_run(run)
    grid = evaluation_grid(2, 3)
    _, fp32_folder = sweep_module.sweep(scorer, run, grid, progress=False)
    monkeypatch.setattr(sweep_module, "scored_on", lambda run: {**scored_on(run), "dtype": str(torch.bfloat16)})
    scored, original = [], PairsScorer.score

    def record(self, model, preferences):
        scored.extend(preferences.tolist())
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    _, bf16_folder = sweep_module.sweep(scorer, run, grid, progress=False)
    assert bf16_folder != fp32_folder and scored == grid.tolist()
    settings = {**scorer.cache_settings(), **scored_on(run), "point_format": sweep_module.POINT_FORMAT}
    del settings["dtype"]
    assert fp32_folder.name == f"pairs-{sweep_module.cache_key(settings, run.weights_digest)[:16]}"


def test_points_cached_on_one_base_model_are_not_read_on_a_changed_one(run_dir, monkeypatch):
    """The same run folder and adapter over another base model's weights (e.g. a new revision behind the same name)."""
    run = load_run(run_dir)
    scorer = PairsScorer.from_run(run)
    grid = evaluation_grid(2, 3)
    _, first_folder = sweep_module.sweep(scorer, run, grid, progress=False)
    scored, original = [], PairsScorer.score

    def record(self, model, preferences):
        scored.extend(preferences.tolist())
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    embeddings = run.model.base_model.get_input_embeddings().weight
    with torch.no_grad():
        embeddings[3] += 0.5
    _, changed_folder = sweep_module.sweep(scorer, run, grid, progress=False)
    assert changed_folder != first_folder and scored == grid.tolist()


def test_a_grid_without_an_interior_point_is_refused():
    with pytest.raises(ValueError, match=r"--grid 2 gives no interior point for 2 dimensions"):
        evaluation_grid(2, 2)
    with pytest.raises(ValueError, match=r"--grid 3 gives no interior point for 3 dimensions"):
        evaluation_grid(3, 3)
    assert (evaluation_grid(3, 4) > 0).all(dim=1).sum() == 1  # (1/3, 1/3, 1/3)


def test_a_run_folder_without_an_adapter_is_refused(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="no run folder"):
        load_run(tmp_path / "missing")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="holds no trained adapter"):
        load_run(unfinished)
    with pytest.raises(FileNotFoundError, match="is not a training run"):
        load_run(run_dir / "adapter")


def test_an_unknown_scorer_is_refused(run_dir):
    with pytest.raises(ValueError, match=r"unknown scorer\(s\) \['votes'\]"):
        evaluate_path(run_dir, scorers=["votes"])


def test_large_held_out_sets_are_scored_and_cached_one_lambda_per_call(run_dir):
    """hh-2d's 1,152 held-out pairs at 4 λs a call meant ~40 min before any λ was cached, so an interrupt lost it
    all; small sets still share calls, where mixed-λ batches fill up."""
    run = load_run(run_dir)
    small = PairsScorer.from_run(run)
    assert small.points_per_call == 4  # 8 pairs
    pairs = small.pair_sets[0].pairs
    large = [PairSet("a", "big", pairs * 40, small.pair_sets[0].beta), PairSet("b", "big", pairs * 40, 0.1)]
    scorer = PairsScorer(
        large, ["a", "b"], pad_token_id=run.tokenizer.pad_token_id, batch_size=8, reference_settings={}
    )
    assert scorer.points_per_call == 1  # 320 pairs: one λ fills many batches


def test_a_run_moved_with_its_data_as_one_tree_is_evaluated_where_it_lies_now(tmp_path, monkeypatch):
    """config.yaml names the data by absolute path: after the project folder holding data and run was renamed,
    `panacea eval` failed with "Preference data file /old/project/data/a.jsonl not found" (training's --resume
    already followed such a move). A run moved alone reads its data where it was, and another file under the same
    name is not taken for it."""
    from panacea.training import train

    workspace = make_workspace(tmp_path / "workspace")  # the model stays here: only data and run move
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(workspace / f"{name}.jsonl", project / "data" / f"{name}.jsonl")
    monkeypatch.chdir(project)
    data = config_dict(workspace, Path("runs/run"), max_steps=2, save_steps=2)
    for dimension in data["dimensions"]:
        dimension["train"] = dimension["eval"] = [{"path": f"data/{dimension['name']}.jsonl", "max_pairs": 4}]
    train(dataclass_from_dict(TrainConfig, data, where="test"))
    moved = tmp_path / "renamed"
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    run = load_run(moved / "runs" / "run")
    assert [source.path for dimension in run.config.dimensions for source in dimension.eval] == [
        str(moved.resolve() / "data" / f"{name}.jsonl") for name in ("a", "b")
    ]
    before = evaluate_path(moved / "runs" / "run", grid_points=3, progress=False)["scorers"]["pairs"]["points"]
    assert len(before) == 3
    shutil.move(moved, project)  # back; then the run alone moves beside a copy of the data: its own data is read
    alone = tmp_path / "elsewhere" / "runs" / "run"
    alone.parent.mkdir(parents=True)
    shutil.move(project / "runs" / "run", alone)
    shutil.copytree(project / "data", tmp_path / "elsewhere" / "data")
    own = str(project.resolve() / "data" / "a.jsonl")
    assert load_run(alone).config.dimensions[0].eval[0].path == own
    # its own data gone, and other pairs under the same names beside it: data.json tells them apart, nothing follows
    shutil.rmtree(project / "data")
    (tmp_path / "elsewhere" / "data" / "a.jsonl").write_text((workspace / "b.jsonl").read_text())
    assert load_run(alone).config.dimensions[0].eval[0].path == own
    with pytest.raises(FileNotFoundError, match=f"{own} not found"):
        evaluate_path(alone, grid_points=3, progress=False)
    shutil.copy(workspace / "a.jsonl", tmp_path / "elsewhere" / "data" / "a.jsonl")  # the same pairs: followed
    assert load_run(alone).config.dimensions[0].eval[0].path == str(tmp_path.resolve() / "elsewhere/data/a.jsonl")


def test_validation_refuses_an_rl_run_that_rolled_out_on_validation_prompts(monkeypatch):
    """Only the pairs scorer checked the training sources, and never RL's prompts: `panacea eval --split validation
    --scorers generations` judged an RL run on prompts it had trained on (found by an independent review)."""
    from panacea.eval.sweep import refuse_trained_on_validation

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    config = TrainConfig.from_yaml(root / "configs" / "hh-2d-rl.yaml")
    refuse_trained_on_validation(config)  # the shipped config rolls out on 'fit' prompts
    config.rl.prompts[1] = dataclasses.replace(config.rl.prompts[1], split="train")
    with pytest.raises(
        ValueError, match=r"rl.prompts.1 \(.*harmless.jsonl.gz, split 'train'\) holds \d+ of the validation prompts"
    ):
        refuse_trained_on_validation(config)
    config.rl.prompts[1] = dataclasses.replace(config.rl.prompts[1], split="fit")
    config.dimensions[0].reward["train"][0]["split"] = "train"  # the reward its policy was optimised against
    with pytest.raises(ValueError, match=r"dimensions.0.reward.train.0 .* fits its reward model on split 'train'"):
        refuse_trained_on_validation(config)


def test_validation_reads_what_a_saved_reward_model_was_fitted_on(monkeypatch, tmp_path):
    """A policy optimised against a saved head (`reward_model` with a `path`) was never checked: a head fitted on
    split 'train', which holds the validation prompts, passed `--split validation` (a review)."""
    from panacea.eval.sweep import refuse_trained_on_validation

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    config = TrainConfig.from_yaml(root / "configs" / "hh-2d-rl.yaml")
    head = tmp_path / "head"
    head.mkdir()
    config.dimensions[1].reward = {"type": "reward_model", "path": str(head)}
    for split, refused in (("train", True), ("fit", False)):
        sources = [f"data/harmless.jsonl.gz (dim 'harmless', split '{split}')"]
        (head / "reward_model.json").write_text(json.dumps({"metadata": {"train_sources": sources}}))
        if refused:
            with pytest.raises(
                ValueError,
                match=r"dimensions.1.reward.path \(.*head: .* fits its reward model on split 'train'.* on split 'fit'",
            ):
                refuse_trained_on_validation(config)
        else:
            refuse_trained_on_validation(config)
    (head / "reward_model.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="does not record the pairs it was fitted on"):
        refuse_trained_on_validation(config)


def test_validation_checks_an_rl_run_on_the_sources_it_trained_on_from_any_folder(monkeypatch, tmp_path):
    """RL never reads its dimensions' `train` pairs (eval scores its validation pairs from those files): their split
    was refused as if the run had trained on it, while the reward model's pairs, which it did optimise against, were
    not checked; the generation prompt sets were read from ./data even for the pairs scorer alone (from another
    folder: a file the run never named was "not found"), and a train file's column mapping was dropped."""
    from panacea.eval.sweep import refuse_trained_on_validation

    root = Path(__file__).resolve().parents[2]
    records = [json.loads(line) for line in gzip.open(root / "data/helpful.jsonl.gz", "rt")][:200]
    mapped = tmp_path / "mapped.jsonl"  # the prompt under another column
    mapped.write_text("".join(json.dumps({**r, "question": r.pop("prompt")}) + "\n" for r in records))
    config = TrainConfig.from_yaml(root / "configs" / "hh-2d-rl.yaml")
    config = dataclasses.replace(config, rl=dataclasses.replace(config.rl, prompts=config.rl.prompts[:1]))
    for dimension in config.dimensions:
        path = str(root / dimension.train[0].path)
        dimension.reward["train"][0]["path"] = path
        dimension.train[0] = dataclasses.replace(dimension.train[0], path=path, split="train")  # RL does not read it
    config.dimensions[0].train[0] = dataclasses.replace(
        config.dimensions[0].train[0], path=str(mapped), columns={"prompt": "question"}
    )
    config.rl.prompts[0] = dataclasses.replace(
        config.rl.prompts[0], path=str(mapped), split="train", columns={"prompt": "question"}
    )
    monkeypatch.chdir(tmp_path)  # not the repository: no ./data
    with pytest.raises(ValueError, match=r"rl.prompts.0 \(.*mapped.jsonl, split 'train'\) holds \d+ of the validation"):
        refuse_trained_on_validation(config)
    config.rl.prompts[0] = dataclasses.replace(config.rl.prompts[0], split="fit")
    refuse_trained_on_validation(config)  # the pairs scorer alone needs nothing from ./data
    with pytest.raises(FileNotFoundError, match="run from the repository root"):
        refuse_trained_on_validation(config, scorers=("generations",))  # its prompt sets live there
