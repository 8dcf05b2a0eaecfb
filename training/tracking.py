"""A JSONL tracker for accelerate: one JSON object per logged step in OUTPUT_DIR/log.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process

from panacea._io import write_text

LOG_FILE = "log.jsonl"


class JSONLTracker(GeneralTracker):
    """Appends `{"step": N, ...values}` lines; on resume, lines past the resumed step are dropped first."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, output_dir: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(output_dir) / LOG_FILE
        self.resume_step: int | None = None  # set before `Accelerator.init_trackers` when resuming

    @on_main_process
    def start(self) -> None:
        """A new run starts an empty log; a resumed one keeps the lines up to the step it resumes from."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= self.resume_step]
        write_text(self.path, "".join(line + "\n" for line in kept))

    @property
    def tracker(self) -> Path:
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        pass  # the run folder's config.yaml holds the configuration

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")


def _step(line: str) -> float:
    try:
        return json.loads(line).get("step") or 0
    except (json.JSONDecodeError, AttributeError):
        return float("inf")  # a torn last line from a killed run: drop it
