"""The checkpointed-state and logging defaults shared by scalarisers and gradient aggregators."""

from __future__ import annotations

from typing import Any


class StepRule:
    """A per-step rule that may log numbers and keep JSON-able state; by default it does neither."""

    name: str

    def metrics(self) -> dict[str, float]:
        """Numbers for the step's log (e.g. solver iterations, how often a veto fired)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint, JSON-able (plain numbers, strings and lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, but the checkpoint holds {sorted(state)}.")
