"""Where a run's numbers go and what a step's row says about its rollouts.

Rows go to `metrics.jsonl` (one JSON object a line, with the time) and their numbers, for rows
of a step, to TensorBoard. A run resumed from a checkpoint supersedes the rows of the steps
after it: they are moved to `metrics.superseded.jsonl` (kept, not lost) and their TensorBoard
events hidden, so every step has one row and one point.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rockroll.train.episodes import Episode

EPISODE_PHASES = ("sandbox", "model", "loop", "verify")


class MetricsLog:
    """`metrics.jsonl` in `out`, and TensorBoard events beside it when `tensorboard`."""

    def __init__(self, out: Path, tensorboard: bool, log: Callable[[str], None] = print) -> None:
        self.out, self.tensorboard, self.log = out, tensorboard, log
        self.path = out / "metrics.jsonl"
        self.writer = self._writer()

    def write(self, metrics: dict) -> None:
        record = {"time": time.time(), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None and "step" in metrics:
            for key, value in metrics.items():
                if isinstance(value, int | float) and key != "step":
                    self.writer.add_scalar(key, value, metrics["step"])
            self.writer.flush()

    def supersede(self, after: int) -> None:
        """Rows of steps after `after` will be written again: move them aside (see above)."""
        if self.path.exists():
            keep, moved = [], []
            for line in self.path.read_text().splitlines():
                row = json.loads(line) if line.strip() else {}
                step = row.get("step", row.get("eval_step", 0 if "sft_step" in row else None))
                (moved if step is None or step > after else keep).append(line)
            if moved:
                with (self.out / "metrics.superseded.jsonl").open("a") as f:
                    f.writelines(line + "\n" for line in moved)
                partial = self.path.with_suffix(".jsonl.partial")
                partial.write_text("".join(line + "\n" for line in keep))
                partial.replace(self.path)
                self.log(f"metrics of {len(moved)} rows after step {after} superseded")
        if self.writer is not None:
            self.writer.close()
            self.writer = self._writer(purge_step=after + 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _writer(self, purge_step: int | None = None) -> Any:
        if not self.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("tensorboard is not installed; metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step)


def rollout_metrics(episodes: list[Episode], seconds: float) -> dict[str, Any]:
    """A step's rollouts: reward, success, tokens/s over the `seconds` waited for them, and
    where a completed episode's time went on average (`episode_seconds`)."""
    done = [e for e in episodes if e.trajectory is not None]
    generated = sum(
        len(s.metrics.completion_token_ids or [])
        for e in done
        for s in e.trajectory.steps  # type: ignore[union-attr]
        if s.source == "agent" and s.metrics
    )
    n = max(len(done), 1)
    return {
        "reward": sum(e.reward for e in done) / n,
        "success": sum(e.passed for e in done) / n,
        "episodes": len(episodes),
        "dropped": len(episodes) - len(done),
        "infra_retries": sum(e.infra_retries for e in episodes),
        "turns": sum(e.turns for e in done) / n,
        "unsafe": sum(bool(e.unsafe) for e in done) / n,
        **_attacks(done),
        "rollout_seconds": seconds,
        "gen_tokens_per_s": generated / max(seconds, 1e-9),
        "episode_seconds": _episode_seconds(done),
    }


def _attacks(done: list[Episode]) -> dict[str, float]:
    """Red-team episodes: the share that ran their injected attack, and the share in which it
    got through, in all and per channel (`attack_followed/prompt`...)."""
    attacked = [e for e in done if e.attack]
    if not attacked:
        return {}
    out: dict[str, float] = {}
    channels = sorted({str(e.attack.get("channel")) for e in attacked})  # type: ignore[union-attr]
    for name, group in [("", attacked)] + [
        (f"/{c}", [e for e in attacked if str(e.attack.get("channel")) == c])  # type: ignore[union-attr]
        for c in channels
    ]:
        out[f"attack_followed{name}"] = sum(e.attack["followed"] for e in group) / len(group)  # type: ignore[index]
        out[f"attack_success{name}"] = sum(e.attack["succeeded"] for e in group) / len(group)  # type: ignore[index]
    return out


def _episode_seconds(done: list[Episode]) -> dict[str, float]:
    """Mean seconds per completed episode: in all, and in each phase it timed."""
    if not done:
        return {}
    out = {"total": statistics.mean(e.seconds for e in done)}
    for phase in EPISODE_PHASES:
        out[phase] = statistics.mean(e.timings.get(phase, 0.0) for e in done)
    return out
