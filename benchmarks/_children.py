"""Side-by-side benchmarks run each contender in a fresh child interpreter: this is the shared plumbing.

Every child gets the same thread count and OpenMP wait policy (PASSIVE unless the caller set one: on a busy
2-core machine a spinning OpenMP worker that loses its time slice stalls every parallel op, ~8 ms per
element-wise op at 2 threads against 0.1 ms when idle workers sleep), its output goes to a log that is shown
only if it fails, and it hands its result back as `result.json` in its own folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from transformers.utils import logging as transformers_logging


def omp_wait_policy() -> str:
    """The children's OpenMP wait policy: the caller's OMP_WAIT_POLICY, else PASSIVE."""
    return os.environ.get("OMP_WAIT_POLICY", "PASSIVE")


def run_in_child(script: str, name: str, plan: Path, folder: Path, folder_variable: str) -> dict:
    """Run `script --child name --plan plan` in a fresh interpreter; it writes its result.json into `folder`
    (passed as the environment variable `folder_variable`). One SystemExit with the log's end if it fails."""
    folder.mkdir()
    threads = str(json.loads(plan.read_text())["threads"])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OMP_WAIT_POLICY": omp_wait_policy(),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
        folder_variable: str(folder),
    }
    log = folder / "log.txt"
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, script, "--child", name, "--plan", str(plan)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"the {name} run failed (exit {done.returncode}); the end of its output:\n{tail}")
    return json.loads((folder / "result.json").read_text())


def quiet_third_party_output() -> None:
    """As `panacea.cli`'s, without importing the CLI: no loading bars, no warnings nobody can act on."""
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
