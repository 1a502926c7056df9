"""Chunk-level initialized resampling (docs/ipa.md, section 3.2.4.4): which episodes start where.

A task whose recent success from the start is at most `hard_below` is *hard*; its episodes
then start from anchors on a verified expert trajectory (the expert's first k turns imposed,
the policy generating from turn k):

- **parallel** (the default): the group's episodes are spread over `anchors` start turns, from
  the start itself to the expert's last turn, in one batch;
- **sequential**: all of them start at one anchor, first the last turn, moved one turn earlier
  each time success there reaches `rollback_at` (a chunk-level curriculum).

Success is tracked per (task, start turn) over the last `window` episodes. Anchors need not be
adjacent: when success from one sampled start `after` beats success from the sampled start
`before` it by at least `crucial_gap`, a crucial turn lies somewhere in `before..after-1` (a
`Fork`); parallel mode then also samples the middle of the gap, which narrows it down until
the two starts are adjacent and the crucial turn is known. When the fork still yields no
success (success from `before` is 0), the expert's turns up to `after - 1`, which include the
crucial one wherever it lies, are imitated beside the RL loss (eq. 10). Experts come from the
tasks' oracles, a teacher, and the policy's own successes from the start (the newest replaces
the expert); each is appended to `experts.jsonl` as it is found, and the resampler's state is
part of a checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rockroll.errors import SandboxError, TaskError
from rockroll.models import Model
from rockroll.models.local import LocalModel
from rockroll.tasks.schema import Task
from rockroll.train.chunks import ChunkedSequence, chunk_trajectory
from rockroll.train.config import ResampleConfig, RolloutConfig
from rockroll.train.episodes import Episode, Job, agent_config, collect, expert_episode
from rockroll.train.expert import Expert, ExpertStates, oracle_expert, success_expert


@dataclass(frozen=True)
class Fork:
    """Success jumps between two sampled start turns: a crucial turn lies in `before..after-1`.
    `turn` is the last turn it can be, so imitating the expert's turns up to it covers it."""

    before: int
    after: int

    @property
    def turn(self) -> int:
        return self.after - 1


@dataclass
class Imitation:
    """Expert turns to imitate (eq. 10): one sequence, with the turns after `upto` masked."""

    task_id: str
    upto: int
    seq: ChunkedSequence
    masked: set[int]


def _locked(method):  # type: ignore[no-untyped-def]
    """Hold the resampler's lock: asynchronous rollouts plan on their own thread."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Resampler:
    """Plans each hard task's group over expert anchors and learns from how they went."""

    def __init__(
        self,
        cfg: ResampleConfig,
        rollout: RolloutConfig,
        tasks: list[Task],
        out: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg, self.rollout, self.log = cfg, rollout, log
        self.tasks = {t.id: t for t in tasks}
        self.path = out / "experts.jsonl"
        self.snapshot_list = out / "snapshots.txt"
        _remove_listed(self.snapshot_list)
        self.experts: dict[str, Expert] = {}
        self.outcomes: dict[tuple[str, int], deque[bool]] = {}
        self.anchor: dict[str, int] = {}  # sequential: the current start turn per task
        self._imitations: dict[tuple[str, int, int], Imitation] = {}
        self._retired: list[ExpertStates] = []
        # Asynchronous rollouts plan jobs on their own thread while a step observes outcomes.
        self._lock = threading.RLock()

    # -- experts ---------------------------------------------------------------------------------
    @_locked
    def add(self, expert: Expert) -> None:
        """Make `expert` its task's expert (kept in experts.jsonl before it is used)."""
        old = self.experts.get(expert.task_id)
        if old is not None:
            if old.states is not None:
                self._retired.append(old.states)
            for start in range(1, old.turns):
                self.outcomes.pop((expert.task_id, start), None)
            if expert.task_id in self.anchor:
                self.anchor[expert.task_id] = min(self.anchor[expert.task_id], expert.turns - 1)
        self.experts[expert.task_id] = expert
        with self.path.open("a") as f:
            f.write(json.dumps(expert.record()) + "\n")

    def expert(self, task: Task) -> Expert | None:
        if task.id not in self.experts and "oracle" in self.cfg.sources:
            with contextlib.suppress(ValueError):
                self.add(oracle_expert(task, self.rollout.action_format))
        return self.experts.get(task.id)

    # -- planning --------------------------------------------------------------------------------
    @_locked
    def jobs(self, task: Task, seeds: list[int], policy: LocalModel) -> list[Job]:
        """One group: plain episodes for a task the policy solves, else episodes over anchors."""
        expert = self.expert(task) if self.hard(task.id) else None
        if expert is None or expert.turns < 2:
            return [Job(task, seed) for seed in seeds]
        starts = self.starts(task.id, expert)
        if any(starts) and self.cfg.init == "fork":
            self._record_states(task, expert, policy)
        return [
            Job(task, seed, start, expert if start else None)
            for seed, start in zip(seeds, _cycle(starts, len(seeds)), strict=True)
        ]

    def hard(self, task_id: str) -> bool:
        rate = self.rate(task_id, 0)
        return rate is None or rate <= self.cfg.hard_below

    def starts(self, task_id: str, expert: Expert) -> list[int]:
        """Sequential: the current anchor. Parallel: `anchors` turns spread from the start to
        the last turn, and the middle of a crucial fork's gap while it spans several turns."""
        last = expert.turns - 1
        if self.cfg.mode == "sequential":
            return [self.anchor.setdefault(task_id, last)]
        n = min(self.cfg.anchors, last + 1)
        starts = {last} if n == 1 else {round(i * last / (n - 1)) for i in range(n)}
        fork = self._fork(task_id, expert)
        if fork is not None and fork.after - fork.before > 1:
            starts.add((fork.before + fork.after) // 2)
        return sorted(starts)

    def _record_states(self, task: Task, expert: Expert, policy: LocalModel) -> None:
        if expert.states is not None:
            return
        try:
            cfg = agent_config(self.rollout, max_turns=expert.turns)
            expert.states = ExpertStates.record(policy, task, expert, cfg)
            with self.snapshot_list.open("a") as f:
                f.writelines(f"{i}\n" for i in expert.states.ids())
        except (SandboxError, TaskError, OSError) as exc:
            self.log(f"resample: cannot record {task.id}'s expert states ({exc}); replaying")

    # -- learning from outcomes --------------------------------------------------------------------
    @_locked
    def observe(self, episodes: list[Episode], step: int) -> dict:
        """Count each completed episode's outcome at its start; refresh experts; roll back."""
        done = [e for e in episodes if e.trajectory is not None]
        for e in done:
            self.outcomes.setdefault((e.task.id, e.start), deque(maxlen=self.cfg.window)).append(
                e.passed
            )
            if e.passed and e.start == 0 and "policy" in self.cfg.sources:
                found = success_expert(e.task.id, e.trajectory, "policy", step)  # type: ignore[arg-type]
                if found is not None and found.turns >= 2:
                    self.add(found)
        if self.cfg.mode == "sequential":
            self._roll_back()
        self._close_retired()
        resumed = [e for e in done if e.start]
        forks = self.crucial_forks()
        return {
            "resampled_episodes": len(resumed),
            "resampled_success": sum(e.passed for e in resumed) / max(len(resumed), 1),
            "start_success": _mean([e.passed for e in done if not e.start]),
            "forked_starts": sum(e.init == "fork" for e in resumed),
            "crucial_forks": len(forks),
            "stuck_forks": sum(self.stuck(t, f) for t, f in forks.items()),
        }

    def _roll_back(self) -> None:
        for task_id, start in list(self.anchor.items()):
            rate = self.rate(task_id, start)
            if start > 0 and rate is not None and rate >= self.cfg.rollback_at:
                self.anchor[task_id] = start - 1
                self.log(f"resample: {task_id} now starts at expert turn {start - 1}")

    def rate(self, task_id: str, start: int) -> float | None:
        """Recent success from `start`, or None before enough episodes were seen there."""
        seen = self.outcomes.get((task_id, start))
        if not seen or len(seen) < self._enough():
            return None
        return sum(seen) / len(seen)

    def _enough(self) -> int:
        """Episodes a rate needs: one parallel batch gives each anchor only a few."""
        return max(1, self.cfg.window // 4)

    @_locked
    def crucial_forks(self) -> dict[str, Fork]:
        """Per task, where its crucial turn lies: the largest rise in success, of at least
        `crucial_gap`, between two starts with known rates and none known between them."""
        forks = {}
        for task_id, expert in self.experts.items():
            fork = self._fork(task_id, expert)
            if fork is not None:
                forks[task_id] = fork
        return forks

    def _fork(self, task_id: str, expert: Expert) -> Fork | None:
        rates = [(s, r) for s in range(expert.turns) if (r := self.rate(task_id, s)) is not None]
        best, fork = self.cfg.crucial_gap, None
        for (before, low), (after, high) in itertools.pairwise(rates):
            if high - low >= best:
                best, fork = high - low, Fork(before, after)
        return fork

    def stuck(self, task_id: str, fork: Fork) -> bool:
        """The fork still yields no success: none from the start before the crucial turn."""
        return self.rate(task_id, fork.before) == 0.0

    @_locked
    def imitations(self, policy: LocalModel) -> list[Imitation]:
        """Eq. 10's imitation part: for each crucial fork that still yields no success, the
        expert's sequence with only its turns up to and including the crucial one (the last
        turn it can be, `Fork.turn`) unmasked."""
        if self.cfg.il_coef == 0:
            return []
        out = []
        for task_id, fork in self.crucial_forks().items():
            if not self.stuck(task_id, fork):
                continue
            expert = self.experts[task_id]
            key = (task_id, id(expert), fork.turn)
            if key not in self._imitations:
                made = self._imitation(expert, fork.turn, policy)
                if made is None:
                    continue
                self._imitations[key] = made
            out.append(self._imitations[key])
        return out

    def _imitation(self, expert: Expert, upto: int, policy: LocalModel) -> Imitation | None:
        task = self.tasks.get(expert.task_id)
        if task is None:
            return None
        episode = expert_episode(policy, task, self.rollout, expert)
        if not episode.passed or episode.trajectory is None:
            self.log(f"resample: {task.id}'s expert no longer passes; no imitation")
            return None
        [seq] = chunk_trajectory(episode.trajectory, episode.reward, passed=True)
        return Imitation(task.id, upto, seq, set(range(upto + 1, seq.num_chunks)))

    # -- state -----------------------------------------------------------------------------------
    @_locked
    def state(self) -> dict:
        return {
            "experts": [x.record() for x in self.experts.values()],
            "outcomes": [[t, s, list(v)] for (t, s), v in self.outcomes.items()],
            "anchor": self.anchor,
        }

    @_locked
    def restore(self, state: dict) -> None:
        self.experts = {
            r["task_id"]: Expert(r["task_id"], r["replies"], r["source"], r["step"])
            for r in state["experts"]
        }
        self.outcomes = {(t, s): deque(v, maxlen=self.cfg.window) for t, s, v in state["outcomes"]}
        self.anchor = dict(state["anchor"])

    @_locked
    def close(self) -> None:
        """Remove every recorded snapshot."""
        for expert in self.experts.values():
            if expert.states is not None:
                self._retired.append(expert.states)
                expert.states = None
        self._close_retired()
        if not self._retired:
            self.snapshot_list.unlink(missing_ok=True)

    def _close_retired(self) -> None:
        for states in self._retired:
            states.close()
        self._retired = [s for s in self._retired if s.snapshots]


def teacher_experts(teacher: Model, tasks: list[Task], cfg: RolloutConfig) -> list[Expert]:
    """A teacher model's verified successes (one greedy episode per task) as experts."""
    episodes = collect(teacher, [Job(t, 0) for t in tasks], cfg, temperature=0.0)  # type: ignore[arg-type]
    found = (
        success_expert(e.task.id, e.trajectory, "teacher")
        for e in episodes
        if e.passed and e.trajectory is not None
    )
    return [x for x in found if x is not None]


def _remove_listed(path: Path) -> None:
    """Snapshots an earlier run recorded and did not remove (it crashed): remove them now."""
    if not path.exists():
        return
    from rockroll.sandbox.runtime import local_runtime

    for snapshot_id in filter(None, path.read_text().split()):
        with contextlib.suppress(SandboxError):
            local_runtime().remove_snapshot(snapshot_id)
    path.unlink()


def _cycle(starts: list[int], n: int) -> list[int]:
    return [starts[i % len(starts)] for i in range(n)]


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0
