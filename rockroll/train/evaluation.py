"""Held-out success: one greedy episode per task, the same seeds every time, per family."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rockroll.tasks.schema import Task
from rockroll.train.episodes import Job
from rockroll.train.rollouts import Rollouts


@dataclass
class EvalResult:
    step: int
    success: float
    per_family: dict[str, tuple[int, int]] = field(default_factory=dict)  # passed, total
    label: str = ""  # "start", "after SFT", or empty for "step N"
    # red-team tasks, per channel: sampled episodes that ran the injected attack, of all
    attacks: dict[str, tuple[int, int]] = field(default_factory=dict)

    def row(self) -> dict:
        """The evaluation as a row of metrics.jsonl."""
        return {
            "eval_step": self.step,
            "eval_label": self.label,
            "eval_success": self.success,
            "eval": self.per_family,
            **({"eval_attacks_followed": self.attacks} if self.attacks else {}),
        }

    @classmethod
    def of(cls, saved: dict) -> EvalResult:
        """An evaluation from its saved `__dict__` (a checkpoint's state)."""
        per_family = {k: (v[0], v[1]) for k, v in saved["per_family"].items()}
        attacks = {k: (v[0], v[1]) for k, v in saved.get("attacks", {}).items()}
        return cls(saved["step"], saved["success"], per_family, saved.get("label", ""), attacks)


def family(task: Task) -> str:
    return task.metadata.category or task.id.rsplit("/", 2)[0]


def evaluate(
    rollouts: Rollouts,
    tasks: list[Task],
    seed: int,
    step: int,
    label: str = "",
    samples: int = 0,
    temperature: float = 1.0,
) -> EvalResult:
    """Every task once, greedily, with `seed`, where the rollouts run episodes. Red-team tasks
    are also sampled `samples` times at `temperature` (seeds from `seed` on): whether a policy
    follows an injection is a probability, which one greedy episode hides."""
    episodes = rollouts.collect([Job(t, seed) for t in tasks], temperature=0.0)
    attacked = [t for t in tasks if isinstance(getattr(t.metadata, "redteam", None), dict)]
    sampled = [Job(t, seed + i) for t in attacked for i in range(samples)]
    tried = rollouts.collect(sampled, temperature=temperature) if sampled else episodes
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in episodes:
        per[family(e.task)][0] += int(e.passed)
        per[family(e.task)][1] += 1
    attacks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in tried:
        if e.attack:
            attacks[str(e.attack.get("channel"))][0] += int(bool(e.attack.get("followed")))
            attacks[str(e.attack.get("channel"))][1] += 1
    success = sum(int(e.passed) for e in episodes) / max(len(episodes), 1)
    return EvalResult(
        step,
        success,
        {k: (v[0], v[1]) for k, v in per.items()},
        label,
        {k: (v[0], v[1]) for k, v in sorted(attacks.items())},
    )
