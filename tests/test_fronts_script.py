"""benchmarks/fronts.sh: every run it would train is a valid config, bad arguments stop it at once, evaluations and
training records are published without weights or caches and the base model's reference log-probs survive a fresh
machine."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from panacea.training import TrainConfig
from panacea.training.checkpoint import STATE_FILE

from panacea.base_model import cache_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fronts.sh"


@pytest.fixture(autouse=True)
def _folders(tmp_path, monkeypatch):
    """Keep every run (even a dry one) off the checkout's runs/ and docs/results/."""
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PUBLISH_DIR", str(tmp_path / "published"))
    monkeypatch.setenv("REFERENCE_SEED", str(tmp_path / "seed"))
    monkeypatch.setenv("EVAL_CACHE_SEED", str(tmp_path / "eval-seed"))
    monkeypatch.setenv("PANACEA_CACHE_DIR", str(tmp_path / "cache"))


SCORED = '{"scorers": {"pairs": {"items": {}}}}'  # a results document on the current measures (per-item values)


def _dry_run(*args: str, script: Path = SCRIPT, **env_vars: str) -> subprocess.CompletedProcess:
    """Run the script (a copy in another checkout: `script`) with `echo` standing in for the panacea command: it
    prints what it would run."""
    env = {**os.environ, "PANACEA": "echo", **env_vars}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=ROOT)


def _fake_panacea(tmp_path: Path, script: str) -> Path:
    """An executable shell script standing in for the panacea command (PANACEA=...)."""
    fake = tmp_path / "panacea"
    fake.write_text(script)
    fake.chmod(0o755)
    return fake


def _trains(stdout: str) -> list[str]:
    """The `panacea train` commands a dry run printed, less the `--check`s before it reuses a finished run."""
    return [line for line in stdout.splitlines() if line.startswith("train ") and not line.endswith(" --check")]


@pytest.mark.parametrize("name", ["hh-2d", "hhc-3d"])
def test_every_run_is_a_valid_config_in_its_own_folder(name, tmp_path):
    done = _dry_run(name)
    assert done.returncode == 0, done.stderr
    trains = [shlex.split(line)[1:] for line in _trains(done.stdout)]
    assert len(trains) == 5
    configs = []
    for words in trains:
        assert words[-1] == "--resume"
        overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
        configs.append(TrainConfig.from_yaml(ROOT / words[0], overrides))
    # the two runs every target reads first (Panacea + LS, soups at the same budget), then the descriptive ones
    runs = (name, f"soups-{name}", f"{name}-tche", f"soups-{name}-full", f"{name}-full")
    assert [c.output_dir for c in configs] == [f"{tmp_path}/runs/{run}" for run in runs]
    panacea_ls, soups_split, panacea_tche, soups_full, panacea_full = configs
    assert (panacea_ls.method, panacea_ls.scalarization) == ("panacea", "ls")
    assert (panacea_tche.method, panacea_tche.scalarization) == ("panacea", "tche")
    assert (soups_split.method, soups_split.soups_budget) == ("soups", "split")
    assert (soups_full.method, soups_full.soups_budget) == ("soups", "full")
    assert {c.max_steps for c in configs[:4]} == {panacea_ls.max_steps}  # one budget; soups splits or multiplies it
    assert (panacea_full.method, panacea_full.scalarization) == ("panacea", "ls")
    assert panacea_full.max_steps == len(panacea_ls.dimensions) * panacea_ls.max_steps  # soups-NAME-full's budget
    soups_config = f"configs/soups-{name}.yaml"  # the baseline's own settings, where it has them
    expected = soups_config if (ROOT / soups_config).is_file() else f"configs/{name}.yaml"
    config = f"configs/{name}.yaml"
    assert [words[0] for words in trains] == [config, expected, config, expected, config]


def test_an_unknown_config_or_run_is_refused_before_anything_runs():
    missing = _dry_run("no-such-config")
    assert missing.returncode == 2 and "no config configs/no-such-config.yaml" in missing.stderr
    unknown = _dry_run("hh-2d", "hh-2d-typo")
    assert unknown.returncode == 2 and "unknown run hh-2d-typo" in unknown.stderr
    assert "train" not in unknown.stdout


def test_eval_args_reach_every_evaluation():
    done = _dry_run("hh-2d", EVAL_ARGS="--grid 6 --limit 8")
    evals = [line for line in done.stdout.splitlines() if line.startswith("eval ")]
    assert done.returncode == 0 and len(evals) == 7  # a soups run once per mode, so each is published when done
    assert all(line.endswith("--grid 6 --limit 8") for line in evals)
    soups = [line.split()[1:4] for line in evals if "/soups-" in line]
    assert [words[1:] for words in soups] == [["--soups-mode", mode] for mode in ("ab", "delta")] * 2


def test_soups_modes_names_the_modes_a_soups_run_is_evaluated_in():
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", SOUPS_MODES="delta")
    evals = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("eval ")]
    assert done.returncode == 0 and [words[1:] for words in evals] == [[], ["--soups-mode", "delta"]]
    typo = _dry_run("hh-2d", SOUPS_MODES="ab delat")
    assert typo.returncode == 2 and "unknown soups mode delat in SOUPS_MODES" in typo.stderr
    assert "train" not in typo.stdout


def test_evaluations_training_records_and_weights_are_published_without_optimizer_state_or_cache(tmp_path):
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    written = (
        "hh-2d/eval/results.json",
        "hh-2d/eval/cache/pairs-0/0.json",
        "hh-2d/config.yaml",
        "hh-2d/data.json",
        "hh-2d/log.jsonl",
        "hh-2d/adapter/adapter_model.safetensors",
        "hh-2d/checkpoints/step-10/optimizer.safetensors",
        f"hh-2d/checkpoints/step-10/{STATE_FILE}",
        f"hh-2d/checkpoints/step-9/{STATE_FILE}",
        "soups-hh-2d/eval/ab/results.json",
        "soups-hh-2d/eval/delta/front.png",
        "soups-hh-2d/manifest.json",
        "soups-hh-2d/data.json",
        "soups-hh-2d/soups/helpful/log.jsonl",
        "soups-hh-2d/soups/helpful/config.yaml",
        "soups-hh-2d/soups/helpful/data.json",
        "soups-hh-2d/soups/helpful/adapter/adapter_model.safetensors",
    )
    for document in written:
        (runs / document).parent.mkdir(parents=True, exist_ok=True)
        (runs / document).write_text(SCORED if document.endswith("results.json") else "{}")
    for config in ("hh-2d/config.yaml", "soups-hh-2d/soups/helpful/config.yaml"):  # runs record absolute data paths
        (runs / config).write_text(f"train: [{{path: {ROOT}/data/helpful.jsonl.gz}}, {{path: /elsewhere/x.jsonl}}]\n")
    (published / "hh-2d-tche/eval").mkdir(parents=True)  # published by an earlier run of the script
    (published / "hh-2d-tche/eval/results.json").write_text(SCORED)

    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d")
    assert done.returncode == 0, done.stderr
    copied = sorted(str(path.relative_to(published)) for path in published.rglob("*") if path.is_file())
    assert copied == [
        "hh-2d-tche/eval/results.json",
        "hh-2d/eval/results.json",
        "hh-2d/train/adapter/adapter_model.safetensors",
        f"hh-2d/train/checkpoints/step-10/{STATE_FILE}",  # the last checkpoint's (step 10, not 9): steps, tokens, time
        "hh-2d/train/config.yaml",
        "hh-2d/train/data.json",
        "hh-2d/train/log.jsonl",
        "soups-hh-2d/eval/ab/results.json",
        "soups-hh-2d/eval/delta/front.png",
        "soups-hh-2d/train/data.json",
        "soups-hh-2d/train/manifest.json",
        "soups-hh-2d/train/soups/helpful/adapter/adapter_model.safetensors",
        "soups-hh-2d/train/soups/helpful/config.yaml",
        "soups-hh-2d/train/soups/helpful/data.json",
        "soups-hh-2d/train/soups/helpful/log.jsonl",
    ]
    relative = "train: [{path: data/helpful.jsonl.gz}, {path: /elsewhere/x.jsonl}]\n"  # any clone restores it
    for config in ("hh-2d/train/config.yaml", "soups-hh-2d/train/soups/helpful/config.yaml"):
        assert (published / config).read_text() == relative
    trains = _trains(done.stdout)
    assert len(trains) == 1 and "soups-hh-2d" in trains[0]  # hh-2d holds its final adapter: not trained again
    compare = [line.split() for line in done.stdout.splitlines() if line.startswith("compare ")]
    runs = [str(published / run) for run in ("hh-2d", "hh-2d-tche", "soups-hh-2d")]
    assert compare == [  # the deciding objective, then its smooth companion
        ["compare", *runs, "--out", str(published), "--baseline", "soups-hh-2d"],
        [
            "compare",
            *runs,
            "--objective",
            "win_probability",
            "--out",
            str(published / "compare-win-probability"),
            "--baseline",
            "soups-hh-2d",
        ],
    ]


def test_train_only_trains_and_publishes_the_training_but_scores_and_compares_nothing(tmp_path):
    """`--train-only`: the named runs train and their records are published, no `panacea eval` or `compare` runs (with
    two fronts published, one would), and the run's cache snapshot stays for the evaluation that follows, which
    reuses the training."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    for run in ("hh-2d-tche", "soups-hh-2d"):  # published by an earlier run of the script: comparable
        (published / run / "eval").mkdir(parents=True)
        (published / run / "eval/results.json").write_text(SCORED)
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\necho "$@"\ncase "$*" in *--check) exit 0;; esac\n[ "$1" = train ] || exit 0\n'
        f"mkdir -p {runs}/hh-2d/adapter && echo w > {runs}/hh-2d/adapter/adapter_model.safetensors\n"
        f"echo '{{}}' > {runs}/hh-2d/log.jsonl\n",
    )
    done = _dry_run("--train-only", "hh-2d", "hh-2d", PANACEA=str(fake))
    assert done.returncode == 0, done.stderr
    assert len(_trains(done.stdout)) == 1
    assert not [line for line in done.stdout.splitlines() if line.startswith(("eval ", "compare "))]
    assert (published / "hh-2d/train/adapter/adapter_model.safetensors").is_file()
    assert (published / "hh-2d/train/log.jsonl").is_file() and not (published / "hh-2d/eval").exists()
    assert (runs / ".reference-snapshots/hh-2d").is_file()
    then = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake))
    assert then.returncode == 0, then.stderr
    assert not _trains(then.stdout) and "=== hh-2d: trained already" in then.stdout
    assert [line.split()[:2] for line in then.stdout.splitlines() if line.startswith("eval ")] == [
        ["eval", str(runs / "hh-2d")]
    ]


def test_with_soups_at_m_times_the_budget_published_every_run_is_also_compared_against_it(tmp_path):
    """Issue 28 asks for Panacea at m× against soups at m×: the pairing was made by hand (hh-2d's
    compare-vs-soups-full/); every front is compared against soups-NAME-full too, on each objective."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    for run in ("hh-2d-full/eval/results.json", "soups-hh-2d-full/eval/ab/results.json"):
        (runs / run).parent.mkdir(parents=True, exist_ok=True)
        (runs / run).write_text('{"scorers": {"pairs": {"items": {}}, "generations": {"items": {}}}}')
    done = _dry_run("hh-2d", "hh-2d-full", "soups-hh-2d-full", EVAL_ARGS="--scorers pairs,generations")
    assert done.returncode == 0, done.stderr
    compare = [line.split() for line in done.stdout.splitlines() if line.startswith("compare ")]
    fronts = [str(published / run) for run in ("soups-hh-2d-full", "hh-2d-full")]
    vs = published / "compare-vs-soups-full"
    assert [sorted(words[1 : 1 + len(fronts)]) for words in compare] == [sorted(fronts)] * 6  # 3 fronts, 2 baselines
    against = [words[1 + len(fronts) :] for words in compare if words[-1] == "soups-hh-2d-full"]
    assert against == [
        ["--out", str(vs), "--baseline", "soups-hh-2d-full"],
        ["--objective", "win_probability", "--out", str(vs / "win-probability"), "--baseline", "soups-hh-2d-full"],
        ["--scorer", "generations", "--out", str(vs / "generations"), "--baseline", "soups-hh-2d-full"],
    ]


def test_fronts_scored_on_generations_alone_are_compared_on_generations_alone(tmp_path):
    """An RL benchmark is scored with the generations scorer only (no preference pairs): the pairs compare ran
    first, refused those fronts, and under `set -e` the script stopped before the generation front, hours in."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    answers_only = '{"scorers": {"generations": {"items": {}}}}'
    for run in ("hh-2d/eval/results.json", "soups-hh-2d/eval/ab/results.json"):
        (runs / run).parent.mkdir(parents=True, exist_ok=True)
        (runs / run).write_text(answers_only)
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", EVAL_ARGS="--scorers generations", SOUPS_MODES="ab")
    assert done.returncode == 0, done.stderr
    compare = [line.split() for line in done.stdout.splitlines() if line.startswith("compare ")]
    fronts = [str(published / run) for run in ("hh-2d", "soups-hh-2d")]
    assert compare == [["compare", *fronts, "--scorer", "generations", "--out", str(published / "compare-generations"),
                        "--baseline", "soups-hh-2d"]]  # fmt: skip
    (runs / "hh-2d" / "eval" / "results.json").write_text('{"scorers": {"pairs": {"items": {}}}}')  # no answers
    mixed = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", EVAL_ARGS="--scorers generations", SOUPS_MODES="ab")
    assert mixed.returncode == 0, mixed.stderr
    assert not [line for line in mixed.stdout.splitlines() if line.startswith("compare ")]
    lacking = published / "hh-2d" / "eval" / "results.json"
    assert f"fronts.sh: not compared on generations: not scored with it: {lacking}" in mixed.stderr
    (runs / "hh-2d" / "eval" / "results.json").write_text('{"items": {}, "scorers": {"pairs": ')  # damaged
    broken = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", EVAL_ARGS="--scorers generations", SOUPS_MODES="ab")
    assert broken.returncode == 2 and "fronts.sh: cannot read the published results" in broken.stderr


def test_one_published_front_is_not_compared(tmp_path):
    (tmp_path / "runs/hh-2d/eval").mkdir(parents=True)
    (tmp_path / "runs/hh-2d/eval/results.json").write_text(SCORED)
    done = _dry_run("hh-2d", "hh-2d")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "published/hh-2d/hh-2d/eval/results.json").is_file()
    assert "1 front(s) published" in done.stderr and "compare" not in done.stdout


def test_reference_log_probs_are_read_from_the_seed_folder_and_new_ones_kept(tmp_path):
    seed, cache = tmp_path / "seed", tmp_path / "cache" / "reference-logps"
    seed.mkdir()
    (seed / "kept-earlier.safetensors").write_text("seed")
    cache.mkdir(parents=True)
    (cache / "unrelated.safetensors").write_text("old")
    os.utime(cache / "unrelated.safetensors", (0, 0))  # in the cache before the script started
    # The fake "trains" by computing one new reference file, and records where it may read. The new file's timestamp
    # is the epoch's, as old as the unrelated one: on a file system with coarse timestamps a file written just after
    # the script started can carry its start time (CI once missed it that way), so its name must decide, not its time.
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\ncase "$*" in *--check) exit 0;; esac\n'  # the check before anything runs computes nothing
        f'[ "$1" = train ] && echo new > {cache}/computed-now.safetensors'
        f" && touch -d @0 {cache}/computed-now.safetensors\n"
        f'echo "$PANACEA_REFERENCE_LOGPS" > {tmp_path}/seen\nexit 0\n',
    )

    done = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake), PANACEA_REFERENCE_LOGPS="/elsewhere")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seen").read_text().strip() == f"{seed}:/elsewhere"
    assert sorted(path.name for path in cache.iterdir()) == ["computed-now.safetensors", "unrelated.safetensors"]
    assert sorted(path.name for path in seed.iterdir()) == ["computed-now.safetensors", "kept-earlier.safetensors"]


def test_the_script_keeps_what_panacea_computed_in_its_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PANACEA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = cache_dir() / "reference-logps"
    assert str(cache).startswith(str(tmp_path / "xdg"))
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\ncase "$*" in *--check) exit 0;; esac\n'
        f"mkdir -p {cache} && echo new > {cache}/computed-now.safetensors\nexit 0\n",
    )
    assert _dry_run("hh-2d", "hh-2d", PANACEA=str(fake)).returncode == 0
    assert (tmp_path / "seed/computed-now.safetensors").read_text() == "new\n"


def test_the_reward_models_and_base_answers_an_evaluation_computed_are_kept_and_read_back(tmp_path):
    """The generations scorer's judges (a folder each), the base model's answers and their rewards go to
    EVAL_CACHE_SEED as the reference log-probs go to REFERENCE_SEED: those computed by the run only, and whole; panacea
    reads them from there ($PANACEA_CACHE_SEEDS)."""
    cache = tmp_path / "cache"
    for old in ("reward-models/harmless-old/reward_model.json", "base-answers/old.json", "base-rewards/old.json"):
        (cache / old).parent.mkdir(parents=True, exist_ok=True)
        (cache / old).write_text("{}")
    (cache / "reward-models/helpful-half").mkdir()  # being written: no metadata yet, so not kept
    fake = _fake_panacea(
        tmp_path,
        f'#!/bin/sh\necho "$PANACEA_CACHE_SEEDS" > {tmp_path}/seen\n[ "$1" = eval ] || exit 0\n'
        f"mkdir -p {cache}/reward-models/helpful-new && echo w > {cache}/reward-models/helpful-new/weights\n"
        f"echo m > {cache}/reward-models/helpful-new/reward_model.json && echo a > {cache}/base-answers/new.json\n"
        f"echo r > {cache}/base-rewards/new.json\n",
    )
    done = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake), PANACEA_CACHE_SEEDS="/elsewhere")
    assert done.returncode == 0, done.stderr
    seed = tmp_path / "eval-seed"
    assert (tmp_path / "seen").read_text().strip() == f"{seed}:/elsewhere"
    kept = sorted(str(path.relative_to(seed)) for path in seed.rglob("*") if path.is_file())
    assert kept == ["base-answers/new.json", "base-rewards/new.json", "reward-models/helpful-new/reward_model.json",
                    "reward-models/helpful-new/weights"]  # fmt: skip


def test_a_run_recorded_by_the_older_script_keeps_its_references_but_no_judge_it_cannot_tell_it_computed(tmp_path):
    """A run whose start was recorded before reward models and base answers were kept (reference file names only):
    every judge in the cache would look new, so none is kept; its new reference files still are."""
    cache = tmp_path / "cache"
    (cache / "reward-models/tiny-judge").mkdir(parents=True)
    (cache / "reward-models/tiny-judge/reward_model.json").write_text("{}")
    (cache / "reference-logps").mkdir()
    (cache / "reference-logps/new.safetensors").write_text("new")
    (tmp_path / "runs/.reference-snapshots").mkdir(parents=True)
    (tmp_path / "runs/.reference-snapshots/hh-2d").write_text("old.safetensors\n")
    assert _dry_run("hh-2d", "hh-2d").returncode == 0
    assert not (tmp_path / "eval-seed").exists()
    assert [path.name for path in (tmp_path / "seed").iterdir()] == ["new.safetensors"]


def test_a_run_resumed_in_a_later_invocation_keeps_what_its_interrupted_start_computed(tmp_path):
    """The reference pass finishes, the training is killed, the next invocation (another session) resumes it."""
    seed, cache = tmp_path / "seed", tmp_path / "cache" / "reference-logps"
    cache.mkdir(parents=True)
    (cache / "unrelated.safetensors").write_text("old")
    fake = _fake_panacea(
        tmp_path,  # the first `train` (not its --check) computes a reference file and dies; later calls succeed
        f'#!/bin/sh\ncase "$*" in *--check) exit 0;; esac\nif [ "$1" = train ] && [ ! -f {tmp_path}/died ]; then\n'
        f"  echo new > {cache}/computed-then.safetensors; touch {tmp_path}/died; exit 137\nfi\nexit 0\n",
    )

    interrupted = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake))
    assert interrupted.returncode == 137 and not seed.exists()
    resumed = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(path.name for path in seed.iterdir()) == ["computed-then.safetensors"]
    assert list((tmp_path / "runs" / ".reference-snapshots").iterdir()) == []  # the run is evaluated: record dropped


def test_an_evaluation_cut_short_publishes_only_the_mode_it_finished(tmp_path):
    """A retrained soups run: ab is re-evaluated, delta is killed. The delta results still in the run folder are the
    old adapters'; they must not be published beside the new ab ones (they will be once delta finishes)."""
    runs, published = tmp_path / "runs" / "soups-hh-2d", tmp_path / "published" / "hh-2d" / "soups-hh-2d"
    for mode in ("ab", "delta"):
        (runs / "eval" / mode).mkdir(parents=True)
        (runs / "eval" / mode / "results.json").write_text(f'{{"mode": "{mode}"}}')
    fake = _fake_panacea(tmp_path, '#!/bin/sh\nfor word in "$@"; do [ "$word" = delta ] && exit 137; done\nexit 0\n')
    done = _dry_run("hh-2d", "soups-hh-2d", PANACEA=str(fake))
    assert done.returncode == 137
    assert sorted(str(path.relative_to(published)) for path in published.rglob("results.json")) == [
        "eval/ab/results.json"
    ]


def test_a_run_published_with_its_weights_is_restored_not_trained_again(tmp_path):
    """A fresh machine: runs/ is empty, docs/results holds the training record and the adapter."""
    record = tmp_path / "published/hh-2d/hh-2d/train"
    for name in ("config.yaml", "log.jsonl", "adapter/adapter_model.safetensors", f"checkpoints/step-100/{STATE_FILE}"):
        (record / name).parent.mkdir(parents=True, exist_ok=True)
        (record / name).write_text("{}")
    soups = tmp_path / "published/hh-2d/soups-hh-2d/train"
    soups.mkdir(parents=True)
    (soups / "manifest.json").write_text('{"complete": false}')  # an unfinished soups record is not restored
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d")
    assert done.returncode == 0, done.stderr
    runs = tmp_path / "runs"
    assert (runs / "hh-2d/adapter/adapter_model.safetensors").is_file()
    assert (runs / "hh-2d/checkpoints/step-100" / STATE_FILE).is_file()
    trains = _trains(done.stdout)
    assert len(trains) == 1 and "output_dir=" + str(runs / "soups-hh-2d") in trains[0]
    assert "hh-2d: restored from" in done.stdout


def test_a_finished_run_trained_with_another_config_stops_the_script_before_anything_runs(tmp_path):
    """After configs/NAME.yaml changes (e.g. tuned defaults), a finished run in runs/, or a published record with
    weights that would be restored, holds the old config's weights: reused, they would be scored as the new
    config's. Each is checked (`panacea train --check`, with the run's settings, against the folder holding it) before
    anything runs, and one that differs stops the script, naming how to move it aside."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    for name in ("config.yaml", "adapter/adapter_model.safetensors"):
        (runs / "hh-2d-tche" / name).parent.mkdir(parents=True, exist_ok=True)
        (runs / "hh-2d-tche" / name).write_text("{}")
    record = published / "soups-hh-2d" / "train"
    for name in ("config.yaml", "soups/helpful/adapter/adapter_model.safetensors"):
        (record / name).parent.mkdir(parents=True, exist_ok=True)
        (record / name).write_text("{}")
    members = {"helpful": {"adapter": "soups/helpful/adapter"}}
    (record / "manifest.json").write_text(json.dumps({"complete": True, "runs": members}))
    calls = tmp_path / "calls"

    def files() -> list[Path]:
        return sorted(path for path in tmp_path.rglob("*") if path.is_file() and path != calls)

    fake = _fake_panacea(  # records every call; the soups record was trained with another config
        tmp_path, f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *{record}*--check) exit 2;; esac\n'
    )
    before = files()
    done = _dry_run("hh-2d", "hh-2d", "hh-2d-tche", "soups-hh-2d", PANACEA=str(fake))
    assert done.returncode == 2
    # the command names this invocation's folders: pasted, it retires these, not the checkout's
    command = f"RUNS_DIR={runs} PUBLISH_DIR={published.parent} python benchmarks/retire_run.py hh-2d soups-hh-2d LABEL"
    assert command in done.stderr
    tche = "scalarization=tche --set preference_sampling=groups --set preference_groups=4 --set micro_batch_size=2"
    soups = "method=soups --set soups_budget=split"
    assert calls.read_text().splitlines() == [  # hh-2d holds no training: checked as the new run it would be
        f"train configs/hh-2d.yaml --set output_dir={runs / 'hh-2d'} --resume --check",
        f"train configs/hh-2d.yaml --set {tche} --set output_dir={runs / 'hh-2d-tche'} --resume --check",
        f"train configs/soups-hh-2d.yaml --set {soups} --set output_dir={record} --resume --check",  # its own config
    ]
    assert files() == before  # nothing restored, trained, scored or published


def test_a_finished_run_in_a_folder_whose_path_holds_a_space_is_checked_and_reused(tmp_path):
    """The check passed output_dir unquoted: a space split it, `panacea train` refused the stray word, and the script
    stopped as if the run had been trained with another config."""
    runs = tmp_path / "runs dir"
    for name in ("config.yaml", "adapter/adapter_model.safetensors"):
        (runs / "hh-2d" / name).parent.mkdir(parents=True, exist_ok=True)
        (runs / "hh-2d" / name).write_text("{}")
    fake = _fake_panacea(  # `train CONFIG --set output_dir=DIR --resume --check`: six words, or a split path
        tmp_path, '#!/bin/sh\nif [ "$1" = train ] && [ "$#" -ne 6 ]; then echo "split: $*" >&2; exit 2; fi\n'
    )
    done = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake), RUNS_DIR=str(runs))
    assert done.returncode == 0, done.stderr
    assert "hh-2d: trained already" in done.stdout


def test_a_soups_record_published_without_its_members_weights_is_trained_not_restored(tmp_path):
    """Soups records published before weights were (a complete manifest, the members' configs and logs only) were
    restored as finished, and eval then failed on the missing LoRAs (2026-12-05): now such a run trains."""
    soups = tmp_path / "published/hh-2d/soups-hh-2d/train"
    for name in ("config.yaml", "soups/helpful/config.yaml", "soups/helpful/log.jsonl", "soups/harmless/log.jsonl"):
        (soups / name).parent.mkdir(parents=True, exist_ok=True)
        (soups / name).write_text("{}")
    members = {name: {"adapter": f"soups/{name}/adapter"} for name in ("helpful", "harmless", "concise")}
    (soups / "manifest.json").write_text(json.dumps({"complete": True, "runs": members}))
    (soups / "soups/helpful/adapter").mkdir()
    (soups / "soups/helpful/adapter/adapter_model.safetensors").write_text("{}")  # harmless's weights are missing
    for missing in ("harmless", "concise"):  # a member without weights, then one without even a folder
        done = _dry_run("hh-2d", "soups-hh-2d")
        assert done.returncode == 0, done.stderr
        assert "restored from" not in done.stdout and not (tmp_path / "runs/soups-hh-2d/manifest.json").exists()
        trains = _trains(done.stdout)
        assert len(trains) == 1 and "output_dir=" + str(tmp_path / "runs/soups-hh-2d") in trains[0]
        (soups / f"soups/{missing}/adapter").mkdir(parents=True, exist_ok=True)
        (soups / f"soups/{missing}/adapter/adapter_model.safetensors").write_text("{}")
    done = _dry_run("hh-2d", "soups-hh-2d")  # now every member's weights
    assert "soups-hh-2d: restored from" in done.stdout and "soups-hh-2d: trained already" in done.stdout


def test_a_checkout_whose_path_holds_sed_delimiters_publishes_relative_data_paths(tmp_path):
    """The published config names data inside the checkout relative to it, matched literally: a '#' in the path (a
    sed delimiter) once failed the copy, and a '.' matched any character."""
    clone = tmp_path / "clone #1.x"
    (clone / "benchmarks").mkdir(parents=True)
    (clone / "benchmarks" / "fronts.sh").write_bytes(SCRIPT.read_bytes())
    (clone / "configs").mkdir()
    (clone / "configs" / "hh-2d.yaml").write_bytes((ROOT / "configs" / "hh-2d.yaml").read_bytes())
    run = tmp_path / "runs" / "hh-2d"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_text("{}")
    (run / "config.yaml").write_text(f"train: [{{path: {clone}/data/a.jsonl}}, {{path: {tmp_path}/clone #1yx/b}}]\n")
    env = {**os.environ, "PANACEA": "echo", "PYTHON": sys.executable}  # the copy has no .venv
    done = subprocess.run(
        ["bash", str(clone / "benchmarks" / "fronts.sh"), "hh-2d", "hh-2d"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    published = tmp_path / "published" / "hh-2d" / "hh-2d" / "train" / "config.yaml"
    assert published.read_text() == f"train: [{{path: data/a.jsonl}}, {{path: {tmp_path}/clone #1yx/b}}]\n"


def test_fronts_on_the_old_measures_are_replaced_or_left_out_of_the_comparison(tmp_path):
    """A re-scored soups mode replaces the run's other mode still on the old measures (no per-item values), and a run
    never re-scored is left out of compare with a message, where compare would refuse every run."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    for run, document in (("hh-2d", "eval/results.json"), ("soups-hh-2d", "eval/ab/results.json")):
        (runs / run / document).parent.mkdir(parents=True)
        (runs / run / document).write_text(SCORED)
    for old in ("soups-hh-2d/eval/delta/results.json", "hh-2d-tche/eval/results.json"):  # published before intervals
        (published / old).parent.mkdir(parents=True)
        (published / old).write_text('{"scorers": {"pairs": {"points": []}}}')
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", SOUPS_MODES="ab")
    assert done.returncode == 0, done.stderr
    assert not (published / "soups-hh-2d/eval/delta").exists() and (published / "soups-hh-2d/eval/ab").is_dir()
    assert (
        "not compared: hh-2d-tche (scored on the old measures; re-score it: benchmarks/fronts.sh hh-2d hh-2d-tche)"
        in done.stderr
    )
    compares = [line.split() for line in done.stdout.splitlines() if line.startswith("compare ")]
    assert [compare[1:3] for compare in compares] == [[str(published / "hh-2d"), str(published / "soups-hh-2d")]] * 2


def test_points_saved_on_one_machine_are_scored_no_more_on_the_next(tmp_path):
    """`--save-points` keeps the grid points a run in progress has cached so far (in git, under docs/results); a fresh
    machine's invocation puts them back into the run's cache before `panacea eval` runs, never over a point the cache
    holds, and drops those of each front once it is published (a soups run's shared vertex points once both modes
    are)."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    cached = {
        "hh-2d-tche/eval/cache/pairs-0123/0.5-0.5.json": '{"sets": 1}',
        "soups-hh-2d/eval/delta/cache/generations-4567/1.0-0.0.json": '{"sets": 2}',
        "soups-hh-2d/eval/cache/pairs-vertex-89ab/1.0-0.0.json": '{"sets": 3}',  # shared by a soup's modes
    }
    finished = {"hh-2d/eval/cache/pairs-cdef/1.0-0.0.json": "{}", "hh-2d/eval/results.json": SCORED}
    for path, text in {**cached, **finished, "hh-2d-tche/eval/results.json": SCORED}.items():
        (runs / path).parent.mkdir(parents=True, exist_ok=True)
        (runs / path).write_text(text)
    for run in ("hh-2d-tche", "soups-hh-2d"):  # in progress: their record of the cache at their start is there
        (runs / ".reference-snapshots").mkdir(exist_ok=True)
        (runs / ".reference-snapshots" / run).write_text("# cache entries v2\n")

    saved = _dry_run("--save-points", "hh-2d")
    assert saved.returncode == 0, saved.stderr
    assert not [line for line in saved.stdout.splitlines() if line.startswith(("train ", "eval ", "compare "))]
    points = sorted(str(path.relative_to(published)) for path in published.rglob("*") if path.is_file())
    assert points == sorted(path.replace("/eval/", "/points/", 1) for path in cached)  # the cache only; not hh-2d's

    # a fresh machine: runs/ is gone; the training records (with weights) and the points are in git
    for run in ("hh-2d-tche", "soups-hh-2d"):
        record = published / run / "train"
        names = ("config.yaml", "log.jsonl", "adapter/adapter_model.safetensors")
        if run.startswith("soups"):
            names = ("config.yaml", "soups/helpful/adapter/adapter_model.safetensors")
            (record / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
            (record / "manifest.json").write_text(
                '{"complete": true, "runs": {"helpful": {"adapter": "soups/helpful/adapter"}}}'
            )
        for name in names:
            (record / name).parent.mkdir(parents=True, exist_ok=True)
            (record / name).write_text("{}")
    fresh = tmp_path / "fresh"
    (fresh / "hh-2d-tche/eval/cache/pairs-0123").mkdir(parents=True)
    (fresh / "hh-2d-tche/eval/cache/pairs-0123/0.5-0.5.json").write_text('{"sets": "scored here"}')
    seen = tmp_path / "seen"
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\n[ "$1" = eval ] || exit 0\n'
        f'(cd "$2/eval" && find . -name "*.json" | sort) >> {seen}\n'
        'out="$2/eval"; [ "$3" = --soups-mode ] && out="$2/eval/$4"; mkdir -p "$out"\n'
        'folder=pairs-0123; [ "$3" = --soups-mode ] && folder=generations-4567\n'
        'printf \'{"items": 1, "scorers": {"x": {"cache": "%s"}}}\' '
        '"$out/cache/$folder" > "$out/results.json"\n',
    )  # records the run's cache as `panacea eval` finds it; writes the results it names
    done = _dry_run("hh-2d", "hh-2d-tche", PANACEA=str(fake), RUNS_DIR=str(fresh))
    assert done.returncode == 0, done.stderr
    assert "hh-2d-tche: 0 grid point(s) restored" in done.stdout  # the one saved point is cached there already
    assert (fresh / "hh-2d-tche/eval/cache/pairs-0123/0.5-0.5.json").read_text() == '{"sets": "scored here"}'
    assert not (published / "hh-2d-tche/points").exists()  # published: its points are dropped

    resumed = _dry_run("hh-2d", "soups-hh-2d", PANACEA=str(fake), RUNS_DIR=str(fresh), SOUPS_MODES="delta")
    assert resumed.returncode == 0, resumed.stderr
    assert "soups-hh-2d: 2 grid point(s) restored" in resumed.stdout
    assert seen.read_text().splitlines()[-2:] == [  # both in place when `panacea eval` ran
        "./cache/pairs-vertex-89ab/1.0-0.0.json",
        "./delta/cache/generations-4567/1.0-0.0.json",
    ]
    points = sorted(str(path.relative_to(published)) for path in published.glob("*/points/**/*") if path.is_file())
    # delta's own points went; the vertex points wait for ab, and empty folders go
    assert sorted(path.name for path in (published / "soups-hh-2d/points").iterdir()) == ["cache"]
    assert points == ["soups-hh-2d/points/cache/pairs-vertex-89ab/1.0-0.0.json"]


def test_a_published_front_gives_back_the_points_it_holds_whole_before_the_run_is_scored_again(tmp_path):
    """Re-scoring a published run on a fresh machine (e.g. its answers judged by a changed detector) scores only what
    its results.json cannot give: the pairs scorer's points are put back into the cache, the generations' are not
    (their answers are not in the document)."""
    published = tmp_path / "published" / "hh-2d" / "hh-2d"
    for name in ("config.yaml", "log.jsonl", "adapter/adapter_model.safetensors"):
        (published / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (published / "train" / name).write_text("{}")
    pairs = {"items": {}, "cache": "/elsewhere/runs/hh-2d/eval/cache/pairs-abcd"}
    document = {
        "grid": [[1.0, 0.0], [0.0, 1.0]],
        "scorers": {
            "pairs": pairs | {"points": [{"sets": {"a": 1}, "objectives": {"x": 1}}, {"sets": {"a": 2}}]},
            "generations": pairs | {"cache": "/elsewhere/generations-ef01", "points": [{"sets": {}}, {"sets": {}}]},
        },
    }
    (published / "eval").mkdir(parents=True)
    (published / "eval" / "results.json").write_text(json.dumps(document))
    seen = tmp_path / "seen"
    fake = _fake_panacea(
        tmp_path, f'#!/bin/sh\n[ "$1" = eval ] || exit 0\n(cd "$2/eval" && find . -type f | sort) > {seen}\n'
    )
    done = _dry_run("hh-2d", "hh-2d", PANACEA=str(fake))
    assert done.returncode == 0, done.stderr
    assert "hh-2d: 2 grid point(s) restored from" in done.stdout
    assert seen.read_text().splitlines() == [  # in place when `panacea eval` ran; the generations' are not
        "./cache/pairs-abcd/0.0000-1.0000.json",
        "./cache/pairs-abcd/1.0000-0.0000.json",
    ]
    point = json.loads((tmp_path / "runs/hh-2d/eval/cache/pairs-abcd/1.0000-0.0000.json").read_text())
    assert point == {"sets": {"a": 1}}  # as the scorer cached it: the objectives are the document's
    # while the run is re-scored (its snapshot there), --save-points keeps what its results.json cannot give back
    (tmp_path / "runs/.reference-snapshots").mkdir(exist_ok=True)
    (tmp_path / "runs/.reference-snapshots/hh-2d").write_text("# cache entries v2\n")
    (tmp_path / "runs/hh-2d/eval/cache/generations-ef01").mkdir(parents=True)
    (tmp_path / "runs/hh-2d/eval/cache/generations-ef01/1.0000-0.0000.json").write_text('{"responses": {}}')
    (tmp_path / "runs/hh-2d/eval/cache/pairs-abcd/0.5000-0.5000.json").write_text('{"sets": {}}')  # a finer grid's
    saved = _dry_run("--save-points", "hh-2d", "hh-2d")
    assert saved.returncode == 0, saved.stderr
    kept = sorted(str(path.relative_to(published / "points")) for path in (published / "points").rglob("*.json"))
    assert kept == [  # not the restored pairs points, point by point
        "cache/generations-ef01/1.0000-0.0000.json",
        "cache/pairs-abcd/0.5000-0.5000.json",
    ]


def test_a_training_saved_on_one_machine_continues_from_its_checkpoint_on_the_next(tmp_path):
    """`--save-points` keeps an unfinished training's newest checkpoint (and, per soups member, a finished member's
    adapter) with its config — data paths relative to the checkout —, data record and log; a fresh machine's
    invocation checks it against the config, puts it back where `panacea train --resume` continues from it, and it
    goes once the training is published."""
    runs, published = tmp_path / "runs", tmp_path / "published" / "hh-2d"
    step = "checkpoints/step-{}/"
    checkpoint = (
        "adapter/adapter_model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "rng.safetensors",
        STATE_FILE,
    )
    written = [
        "hh-2d-full/data.json",
        "hh-2d-full/log.jsonl",
        *(f"hh-2d-full/{step.format(n)}{name}" for n in (10, 20) for name in checkpoint),  # 20 is the newest
        "hh-2d-full/eval/cache/pairs-0/0.json",  # not training
        "soups-hh-2d-full/manifest.json",
        "soups-hh-2d-full/soups/helpful/adapter/adapter_model.safetensors",  # listed: its adapter, not its checkpoint
        *(f"soups-hh-2d-full/soups/helpful/{step.format(100)}{name}" for name in checkpoint),
        "soups-hh-2d-full/soups/harmless/log.jsonl",
        *(f"soups-hh-2d-full/soups/harmless/{step.format(30)}{name}" for name in checkpoint),
        "hh-2d/adapter/adapter_model.safetensors",  # a finished training: nothing to save
        f"hh-2d/{step.format(100)}optimizer.safetensors",
    ]
    for path in written:
        (runs / path).parent.mkdir(parents=True, exist_ok=True)
        (runs / path).write_text(path)
    manifest = {"complete": False, "runs": {"helpful": {"adapter": "soups/helpful/adapter"}}}
    (runs / "soups-hh-2d-full/manifest.json").write_text(json.dumps(manifest))
    for config in ("hh-2d-full/config.yaml", "soups-hh-2d-full/soups/harmless/config.yaml"):
        (runs / config).write_text(f"train: [{{path: {ROOT}/data/harmless.jsonl.gz}}]\n")

    saved = _dry_run("--save-points", "hh-2d")
    assert saved.returncode == 0, saved.stderr
    kept = sorted(str(path.relative_to(published)) for path in published.rglob("*") if path.is_file())
    assert kept == sorted(
        [
            "hh-2d-full/resume/config.yaml",
            "hh-2d-full/resume/data.json",
            "hh-2d-full/resume/log.jsonl",
            *(f"hh-2d-full/resume/{step.format(20)}{name}" for name in checkpoint),
            "soups-hh-2d-full/resume/manifest.json",
            "soups-hh-2d-full/resume/soups/helpful/adapter/adapter_model.safetensors",
            "soups-hh-2d-full/resume/soups/harmless/config.yaml",
            "soups-hh-2d-full/resume/soups/harmless/log.jsonl",
            *(f"soups-hh-2d-full/resume/soups/harmless/{step.format(30)}{name}" for name in checkpoint),
        ]
    )
    assert (published / "hh-2d-full/resume/config.yaml").read_text() == "train: [{path: data/harmless.jsonl.gz}]\n"

    # a member that finished after the manifest was written (not listed yet) keeps its last checkpoint: it resumes
    (runs / "soups-hh-2d-full/manifest.json").write_text('{"complete": false, "runs": {}}')
    assert _dry_run("--save-points", "hh-2d", "soups-hh-2d-full").returncode == 0
    member = published / "soups-hh-2d-full/resume/soups/helpful"
    assert (member / "adapter/adapter_model.safetensors").is_file()
    assert sorted(path.name for path in (member / "checkpoints").iterdir()) == ["step-100"]

    # a checkpoint pruned while it was copied (here: one file gone) does not replace the earlier save
    newer = runs / "hh-2d-full" / step.format(30)
    for name in checkpoint[:-2]:
        (newer / name).parent.mkdir(parents=True, exist_ok=True)
        (newer / name).write_text(name)
    (newer / STATE_FILE).write_text("30")
    pruned = _dry_run("--save-points", "hh-2d", "hh-2d-full")
    assert pruned.returncode == 0 and "was pruned while it was copied" in pruned.stderr
    assert sorted(path.name for path in (published / "hh-2d-full/resume/checkpoints").iterdir()) == ["step-20"]
    (newer / "rng.safetensors").write_text("rng")  # whole: a later save replaces the earlier one
    assert _dry_run("--save-points", "hh-2d", "hh-2d-full").returncode == 0
    assert sorted(path.name for path in (published / "hh-2d-full/resume/checkpoints").iterdir()) == ["step-30"]

    # a fresh machine: the save is checked against the config, then `panacea train` finds it in place and finishes it
    # (the fake writes its adapter)
    fresh, seen = tmp_path / "fresh", tmp_path / "seen"
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\n[ "$1" = train ] || exit 0\n'
        'for word in "$@"; do case $word in output_dir=*) out=${word#*=};; esac; done\n'
        f'case "$*" in *--check) echo "check $out" >> {seen}; exit 0;; esac\n'
        f'(cd "$out" && find . -type f | sort) >> {seen}\n'
        'mkdir -p "$out/adapter" && echo done > "$out/adapter/adapter_model.safetensors"\n',
    )
    (fresh / "hh-2d-full.tmp/resume").mkdir(parents=True)  # what a killed copy left: not nested into
    done = _dry_run("hh-2d", "hh-2d-full", PANACEA=str(fake), RUNS_DIR=str(fresh))
    assert done.returncode == 0, done.stderr
    assert "hh-2d-full: continues from the checkpoint saved in" in done.stdout
    assert "(checkpoints/step-30)" in done.stdout
    assert seen.read_text().splitlines() == [
        f"check {published}/hh-2d-full/resume",
        *(f"./checkpoints/step-30/{name}" for name in sorted(checkpoint)),
        "./config.yaml",
        "./data.json",
        "./log.jsonl",
    ]
    assert not (published / "hh-2d-full/resume").exists()  # trained and published: the save goes
    assert (published / "hh-2d-full/train/adapter/adapter_model.safetensors").is_file()


def test_a_saved_training_of_another_config_stops_the_script_before_anything_runs(tmp_path):
    """A fresh machine would continue the training saved in RUN/resume/; started with another config (or data), it
    is refused before any run trains, naming the folder to delete, and nothing is restored."""
    saved = tmp_path / "published/hh-2d/hh-2d-full/resume"
    (saved / "checkpoints/step-20").mkdir(parents=True)
    (saved / "config.yaml").write_text("learning_rate: 1\n")
    fake = _fake_panacea(
        tmp_path, f'#!/bin/sh\ncase "$*" in *{saved}*--check) echo "differs in learning_rate" >&2; exit 1;; esac\n'
    )
    done = _dry_run("hh-2d", "hh-2d", "hh-2d-full", PANACEA=str(fake))
    assert done.returncode == 2
    assert f"the unfinished training saved in {saved} (--save-points) was started with another config" in done.stderr
    assert "=== hh-2d: train" not in done.stdout and not (tmp_path / "runs/hh-2d-full").exists()


def test_a_run_that_would_not_train_stops_the_script_before_any_run_trains(tmp_path):
    """Only finished trainings were checked up front: a run the trainer refuses (e.g. an aggregator under
    Tchebycheff) failed at its turn, after the runs before it had trained for hours."""
    fake = _fake_panacea(
        tmp_path,
        '#!/bin/sh\ncase "$*" in *hh-2d-tche*--check) echo "aggregator cannot run with scalarization tche" >&2; '
        "exit 2;; esac\n",
    )
    done = _dry_run("hh-2d", "hh-2d", "hh-2d-tche", PANACEA=str(fake))
    assert done.returncode == 2
    assert "fronts.sh: hh-2d-tche would not train from configs/hh-2d.yaml + --set scalarization=tche" in done.stderr
    assert "=== hh-2d: train" not in done.stdout and not (tmp_path / "runs/hh-2d").exists()


def test_a_soups_config_that_trains_another_budget_stops_the_script_and_a_missing_one_is_announced(tmp_path):
    """configs/soups-NAME.yaml must train what configs/NAME.yaml trains (β aside), as make demo requires of
    soups-demo.yaml; without one, the soups runs train with Panacea's settings, which the log now says."""
    configs = tmp_path / "checkout" / "configs"
    configs.mkdir(parents=True)
    for name in ("hh-2d.yaml", "soups-hh-2d.yaml"):
        shutil.copy(ROOT / "configs" / name, configs / name)
    (tmp_path / "checkout" / "data").symlink_to(ROOT / "data")
    (tmp_path / "checkout" / "benchmarks").mkdir()
    shutil.copy(SCRIPT, tmp_path / "checkout" / "benchmarks" / "fronts.sh")
    soups = yaml.safe_load((configs / "soups-hh-2d.yaml").read_text())
    soups["max_steps"] = 50  # not the budget of hh-2d.yaml
    (configs / "soups-hh-2d.yaml").write_text(yaml.safe_dump(soups))
    environment = {"PYTHON": sys.executable}
    done = _dry_run("hh-2d", "hh-2d", script=tmp_path / "checkout" / "benchmarks" / "fronts.sh", **environment)
    assert done.returncode == 1
    assert "soups-hh-2d.yaml: the rewarded-soups baseline must train what configs/hh-2d.yaml trains" in done.stderr
    assert "['max_steps']" in done.stderr and "=== hh-2d: train" not in done.stdout
    (configs / "soups-hh-2d.yaml").unlink()
    done = _dry_run("hh-2d", "soups-hh-2d", script=tmp_path / "checkout" / "benchmarks" / "fronts.sh", **environment)
    assert done.returncode == 0, done.stderr
    assert "no configs/soups-hh-2d.yaml: the soups runs train from configs/hh-2d.yaml" in done.stderr


@pytest.mark.parametrize("status", [2, 1])
def test_runs_compare_refuses_on_win_probability_are_said_and_the_generation_comparison_still_runs(tmp_path, status):
    """Win probability is defined by each run's β, and each method may choose its own: compare refuses such runs on
    it (exit 2), which under `set -e` ended the job before the generation comparison. Any other failure still stops
    the script."""
    runs, calls = tmp_path / "runs", tmp_path / "calls"
    for run in ("hh-2d/eval/results.json", "soups-hh-2d/eval/ab/results.json"):
        (runs / run).parent.mkdir(parents=True, exist_ok=True)
        (runs / run).write_text('{"scorers": {"pairs": {"items": {}}, "generations": {"items": {}}}}')
    refusal = "panacea compare: error: b and a were scored with different 'pairs' settings (sets: …, β)"
    fake = _fake_panacea(
        tmp_path,
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *win_probability*) [ {status} = 2 ] && echo "{refusal}" >&2; exit {status};; esac\n',
    )
    stale = tmp_path / "published/hh-2d/compare-win-probability"
    stale.mkdir(parents=True)
    (stale / "compare.md").write_text("an older comparison")
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", PANACEA=str(fake), EVAL_ARGS="--scorers pairs,generations")
    compared = [line for line in calls.read_text().splitlines() if line.startswith("compare ")]
    if status == 2:
        assert done.returncode == 0, done.stderr
        assert refusal in done.stderr and "not compared on win probability: the runs were trained with different β" in (
            done.stderr
        )
        assert len(compared) == 3 and "--scorer generations" in compared[-1]
        assert not stale.exists()  # not left beside the new comparisons
    else:
        assert done.returncode == 1 and len(compared) == 2 and stale.exists()


def test_another_error_of_the_win_probability_comparison_stops_the_script(tmp_path):
    """Exit 2 is any error panacea reports (a full disk, a bad --out): only the refusal over β is passed by."""
    runs, calls = tmp_path / "runs", tmp_path / "calls"
    for run in ("hh-2d/eval/results.json", "soups-hh-2d/eval/ab/results.json"):
        (runs / run).parent.mkdir(parents=True, exist_ok=True)
        (runs / run).write_text('{"scorers": {"pairs": {"items": {}}}}')
    fake = _fake_panacea(
        tmp_path,
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        'case "$*" in *win_probability*) echo "panacea compare: error: [Errno 28] No space left" >&2; exit 2;; esac\n',
    )
    done = _dry_run("hh-2d", "hh-2d", "soups-hh-2d", PANACEA=str(fake))
    assert (
        done.returncode == 2
        and "No space left" in done.stderr
        and "not compared on win probability" not in (done.stderr)
    )
