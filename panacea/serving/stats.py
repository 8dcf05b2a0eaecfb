"""Where the engine's time goes: counters and per-phase seconds since start, as `GET /health` reports them.

The engine thread adds to one `EngineStats` as it works. Each phase is timed with `time.perf_counter`, a few clock
reads per step, around work that ends with its tokens on the host, so on a GPU too the time lands in the phase that
spent it; only a chunk of a prompt that is not its last is timed without waiting for the device. Together the
phases cover the thread's wall time but for the bookkeeping between them. `EngineStats.since(before)` is what
happened between two snapshots, as the benchmark uses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class EngineStats:
    """Counters and seconds of the engine thread since it started; seconds are wall-clock time on that thread."""

    requests: int = field(default=0, metadata={"help": "Requests submitted."})
    cancelled: int = field(default=0, metadata={"help": "Requests whose client went away before they finished."})
    prefills: int = field(default=0, metadata={"help": "Forward passes over prompts (a chunked prompt takes several)."})
    steps: int = field(default=0, metadata={"help": "Decode steps: one forward pass for every running row."})
    tokens: int = field(default=0, metadata={"help": "Tokens generated (first tokens included)."})
    peak_batch_size: int = field(default=0, metadata={"help": "The most rows one decode step served."})
    idle_seconds: float = field(default=0.0, metadata={"help": "Waiting for a request, with no row to serve."})
    prefill_seconds: float = field(default=0.0, metadata={"help": "Prefill forward passes and first tokens."})
    prefill_tokens: int = field(default=0, metadata={"help": "Prompt tokens prefilled."})
    prefill_padded_tokens: int = field(default=0, metadata={"help": "Tokens the prefills computed, padding too."})
    join_seconds: float = field(default=0.0, metadata={"help": "Copying prefilled rows into the running batch."})
    decode_seconds: float = field(default=0.0, metadata={"help": "Decode forward passes and sampling."})
    decode_rows: int = field(default=0, metadata={"help": "Rows summed over decode steps."})
    leave_seconds: float = field(default=0.0, metadata={"help": "Removing finished rows from the running batch."})
    output_seconds: float = field(default=0.0, metadata={"help": "Detokenising new tokens and handing them over."})
    queue_seconds: float = field(default=0.0, metadata={"help": "Summed over requests: submitted to prefill start."})
    first_token_seconds: float = field(default=0.0, metadata={"help": "Summed over requests: submitted to 1st token."})
    started: int = field(default=0, metadata={"help": "Requests whose prefill started (queue_seconds' count)."})
    first_tokens: int = field(default=0, metadata={"help": "Requests that got a first token (its count)."})
    steps_by_rows: dict[int, list[float]] = field(
        default_factory=dict, metadata={"help": "Rows in a decode step → [steps, seconds]: step time by batch size."}
    )

    def add_step(self, rows: int, seconds: float) -> None:
        self.steps += 1
        self.decode_rows += rows
        self.decode_seconds += seconds
        self.peak_batch_size = max(self.peak_batch_size, rows)
        tally = self.steps_by_rows.setdefault(rows, [0, 0.0])
        tally[0] += 1
        tally[1] += seconds

    def snapshot(self) -> EngineStats:
        """A copy another thread can read while the engine goes on."""
        copy = EngineStats(
            **{item.name: getattr(self, item.name) for item in fields(self) if item.name != "steps_by_rows"}
        )
        copy.steps_by_rows = {rows: list(tally) for rows, tally in dict(self.steps_by_rows).items()}
        return copy

    def since(self, before: EngineStats) -> EngineStats:
        """What happened after `before` (an earlier snapshot); peak_batch_size is the later one's."""
        delta = EngineStats(
            **{
                item.name: getattr(self, item.name) - getattr(before, item.name)
                for item in fields(self)
                if item.name not in ("steps_by_rows", "peak_batch_size")
            }
        )
        delta.peak_batch_size = self.peak_batch_size
        for rows, (steps, seconds) in self.steps_by_rows.items():
            earlier = before.steps_by_rows.get(rows, [0, 0.0])
            if steps > earlier[0]:
                delta.steps_by_rows[rows] = [steps - earlier[0], seconds - earlier[1]]
        return delta

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps_by_rows"] = {str(rows): tally for rows, tally in sorted(self.steps_by_rows.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineStats:
        known = {item.name for item in fields(cls)}
        stats = cls(**{key: value for key, value in data.items() if key in known and key != "steps_by_rows"})
        stats.steps_by_rows = {int(rows): list(tally) for rows, tally in data.get("steps_by_rows", {}).items()}
        return stats
