"""Asynchronous rollouts (`rollout.mode: async`): episodes run in the background while the
learner updates.

Worker threads keep `max_in_flight` episodes running through the same harness as `collect`
(`run_episode`, the policy's batched decoding). The trainer's thread makes the jobs (a group is
the trainer's plan for one task), decodes the workers' batches while it waits, and takes groups
in the order they finish, so a step no longer waits for its slowest episode. An episode holds
the policy's `joined()` (decoding batches wait a little for its next call) until its last
possible turn: what follows is verification, which may take long.

Versions: the policy version is the number of updates applied (`weights_version` of the policy
the learner updates). Every decoding batch holds the policy's weights lock and so does the
learner's step, which sets the new version under it, so a batch samples with one version's
weights and each completion reports it. An episode records the versions of its first and last
sampled turns; its staleness when a step takes it is the current version minus the first.

pi_old: the learner keeps only the current weights. Episodes sampled by them alone get pi_old
recomputed (and IPA's mismatch mask); for the others mu stands in for it (docs/ipa.md point 6):
a taken episode's `version` is that of its first sampled turn, and `sequences_of` marks those
older than the learner's.

Staleness bound k: with `stale: drop`, episodes older than k versions are dropped (a running
one is stopped at its next model call, since it can no longer be used) and a group left with
nothing is replaced by the next one to finish; with `keep` they train with mu as pi_old.

Failures: a sandbox failure is retried inside `run_episode`, as in `collect`. An episode that
raises anything else (its worker died) is run again from the same job, up to
`max_infra_retries` times, then dropped as an infrastructure failure. `close()` stops the
workers: running episodes end at their next model call and close their sandboxes.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from rockroll.models.local import LocalModel
from rockroll.models.messages import Completion, Message
from rockroll.train.config import AsyncConfig, RolloutConfig
from rockroll.train.episodes import Episode, Job, agent_config, collect, run_episode, unfinished
from rockroll.train.rollouts.base import Plan, Taken


class _Closing(Exception):
    """Ends an episode because the rollouts are stopping."""


class _Stale(Exception):
    """Ends an episode that is already too stale to be used."""


@dataclass
class Rollout:
    """A finished episode and the policy versions of its first and last sampled turns."""

    episode: Episode
    first: int
    last: int


@dataclass(eq=False)
class _Group:
    jobs: list[Job]
    rollouts: list[Rollout | None]
    left: int


@dataclass(frozen=True)
class _Item:
    group: _Group
    index: int
    deaths: int = 0

    @property
    def job(self) -> Job:
        return self.group.jobs[self.index]


class AsyncRollouts:
    """Episodes produced continuously; `take(n)` hands the trainer the next `n` finished groups.

    `plan(slot)` makes a group's jobs on the trainer's thread (`slot` counts the groups made
    during one `take`); the workers start with the first `take`; `close()` when done.
    """

    def __init__(
        self,
        policy: LocalModel,
        rollout: RolloutConfig,
        cfg: AsyncConfig,
        plan: Plan,
        log: Callable[[str], None] = print,
    ) -> None:
        self.policy, self.rollout, self.cfg = policy, rollout, cfg
        self.plan, self.log = plan, log
        self.in_flight = cfg.max_in_flight or rollout.workers
        self.taken: list[Rollout] = []  # what the last `take` handed out (stale ones dropped)
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._ready: deque[_Group] = deque()
        self._running = 0
        self._closing = False
        self._failure: BaseException | None = None
        self._workers: list[threading.Thread] = []
        self._slot = 0
        self._counts: Counter[str] = Counter()  # deaths and sampled tokens since the last take
        self._since = time.monotonic()

    @property
    def version(self) -> int:
        """The policy version now: updates the learner applied to the shared policy."""
        return self.policy.weights_version

    # -- the trainer's side ---------------------------------------------------------------------
    def take(self, n: int) -> Taken:
        """The episodes of the next `n` groups to finish (group after group) and the step's
        rollout metrics; this thread decodes the workers' batches while it waits."""
        started = time.monotonic()
        self._start()
        self._slot = 0
        groups: list[_Group] = []
        while len(groups) < n:
            self._top_up(n - len(groups))
            self.policy.drive(self._wake, lambda: None)
            if self._failure is not None:
                raise RuntimeError("a rollout worker failed") from self._failure
            groups += self._usable(self._pop(n - len(groups)))
        self._top_up(n)
        episodes, metrics = self._hand_out(groups)
        return Taken(episodes, time.monotonic() - started, metrics)

    def collect(self, jobs: list[Job], temperature: float | None = None) -> list[Episode]:
        """Run `jobs` now in this thread's pool (evaluation); the workers go on meanwhile."""
        return collect(self.policy, jobs, self.rollout, temperature=temperature)

    def push(self, model: Any, version: int) -> None:
        """Nothing to send: the workers decode with the learner's policy, whose weights and
        version the learner's step changes under the weights lock."""

    def close(self) -> None:
        """Stop the workers: queued jobs are dropped, running episodes end at their next model
        call; waits at most `shutdown_seconds` for them to close their sandboxes."""
        with self._cond:
            self._closing = True
            self._queue.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + self.cfg.shutdown_seconds
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if alive := sum(w.is_alive() for w in self._workers):
            self.log(f"async rollouts: {alive} episodes still running; they end on their own")

    # -- making and taking groups -----------------------------------------------------------------
    def _start(self) -> None:
        if self._closing:
            raise RuntimeError("the rollouts are closed")
        while len(self._workers) < self.in_flight:
            worker = threading.Thread(
                target=self._work, name=f"rockroll-rollout-{len(self._workers)}", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def _top_up(self, wanted: int) -> None:
        """Queue new groups until the workers have `in_flight` jobs waiting, unless `wanted`
        groups are already finished (then more would only grow stale)."""
        while len(self._queue) < self.in_flight and len(self._ready) < wanted:
            jobs = self.plan(self._slot)
            self._slot += 1
            if len(jobs) != self.rollout.group_size:
                raise RuntimeError(f"a group has {len(jobs)} jobs, not {self.rollout.group_size}")
            group = _Group(jobs, [None] * len(jobs), len(jobs))
            with self._cond:
                self._queue.extend(_Item(group, i) for i in range(len(jobs)))
                self._cond.notify_all()

    def _wake(self) -> bool:
        """Whether the waiting trainer has something to do (read without the lock: a stale
        answer costs one poll)."""
        return bool(self._ready) or self._failure is not None or len(self._queue) < self.in_flight

    def _pop(self, n: int) -> list[_Group]:
        with self._cond:
            return [self._ready.popleft() for _ in range(min(n, len(self._ready)))]

    def _usable(self, groups: list[_Group]) -> list[_Group]:
        """The groups with their too-stale episodes dropped (`stale: drop`), less those that
        staleness left with nothing to train on."""
        out = []
        for group in groups:
            rollouts = [self._drop_if_stale(r) for r in group.rollouts if r is not None]
            group.rollouts = list(rollouts)
            stale = any(r.episode.termination == "stale" for r in rollouts)
            if not stale or any(r.episode.trajectory is not None for r in rollouts):
                out.append(group)
                continue
            with self._cond:
                self._counts["stale_dropped"] += len(rollouts)
        return out

    def _drop_if_stale(self, r: Rollout) -> Rollout:
        too_old = self.version - r.first > self.cfg.max_staleness
        if self.cfg.stale == "keep" or not too_old or r.episode.trajectory is None:
            return r
        return dataclasses.replace(r, episode=_unused(r.episode, "stale"))

    def _hand_out(self, groups: list[_Group]) -> tuple[list[Episode], dict]:
        rollouts = [r for g in groups for r in g.rollouts if r is not None]
        used = [r for r in rollouts if r.episode.trajectory is not None]
        self.taken = used
        for r in used:
            r.episode.version = r.first  # older than the learner's: mu stands in for pi_old
        return [r.episode for r in rollouts], self._metrics(rollouts, used)

    def _metrics(self, rollouts: list[Rollout], used: list[Rollout]) -> dict:
        with self._cond:
            counts, self._counts = self._counts, Counter()
            running, queued = self._running, len(self._queue)
        now, since = time.monotonic(), self._since
        self._since = now
        staleness = [self.version - r.first for r in used] or [0]
        stale = sum(r.episode.termination == "stale" for r in rollouts)
        return {
            "version": self.version,
            "staleness_mean": statistics.mean(staleness),
            "staleness_max": max(staleness),
            "staleness_counts": {str(k): v for k, v in sorted(Counter(staleness).items())},
            "version_span_mean": statistics.mean([r.last - r.first for r in used] or [0]),
            "pi_old_mu_fraction": sum(r.first < self.version for r in used) / max(len(used), 1),
            "stale_dropped": stale + counts["stale_dropped"],
            "worker_deaths": counts["deaths"],
            "in_flight": running,
            "queued": queued,
            "gen_tokens_per_s": counts["tokens"] / max(now - since, 1e-9),
        }

    # -- the workers' side ------------------------------------------------------------------------
    def _work(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._finish(item, self._run(item))
            except _Closing:
                return
            except Exception as exc:  # the episode died of something else than its sandbox
                self._died(item, exc)
            except BaseException as exc:
                self._failure = exc
                raise
            finally:
                with self._cond:
                    self._running -= 1

    def _next(self) -> _Item | None:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closing)
            if self._closing:
                return None
            self._running += 1
            return self._queue.popleft()

    def _run(self, item: _Item) -> Rollout:
        job, started = item.job, self.version
        view = _EpisodePolicy(self.policy, self, last_turn=job.start + self.rollout.max_turns - 1)
        try:
            with view.joined():
                episode = run_episode(
                    view,  # type: ignore[arg-type]
                    job,
                    agent_config(self.rollout, job.seed),
                    self.rollout,
                )
        except _Stale:
            episode = _unused(_blank(job), "stale")
        versions = view.versions or [started]
        return Rollout(episode, versions[0], versions[-1])

    def _finish(self, item: _Item, rollout: Rollout) -> None:
        with self._cond:
            group = item.group
            group.rollouts[item.index] = rollout
            group.left -= 1
            if group.left == 0:
                self._ready.append(group)

    def _died(self, item: _Item, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        again = item.deaths < self.rollout.max_infra_retries
        self.log(
            f"async rollouts: an episode of {item.job.task.id} died ({problem}); "
            + ("running it again" if again else "dropped")
        )
        with self._cond:
            self._counts["deaths"] += 1
            if again:
                self._queue.appendleft(dataclasses.replace(item, deaths=item.deaths + 1))
                self._cond.notify_all()
                return
        episode = _unused(_blank(item.job), "infra_error", problem)
        self._finish(item, Rollout(episode, self.version, self.version))

    def _check(self, versions: list[int]) -> None:
        """Called before each model call of an episode: end it if it can no longer be used."""
        if self._closing:
            raise _Closing
        too_old = versions and self.version - versions[0] > self.cfg.max_staleness
        if too_old and self.cfg.stale == "drop":
            raise _Stale

    def _sampled(self, completion: Completion) -> None:
        with self._cond:
            self._counts["tokens"] += completion.completion_tokens or 0


class _EpisodePolicy:
    """The policy as one episode sees it: it notes the weights version of each sampled turn and
    ends the episode (by raising) when the rollouts stop or the episode is too stale."""

    def __init__(self, policy: LocalModel, source: AsyncRollouts, last_turn: int) -> None:
        self._policy, self._source, self._last_turn = policy, source, last_turn
        self.versions: list[int] = []
        self._turn = -1
        self._joined = ExitStack()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    @contextmanager
    def joined(self) -> Iterator[None]:
        """The policy's `joined()`, left early once the last possible turn is sampled."""
        with self._joined:
            self._joined.enter_context(self._policy.joined())
            yield

    def complete(self, messages: list[Message], tools: list[dict] | None, **kw: Any) -> Completion:
        turn = sum(m.role == "assistant" for m in messages)
        if turn <= self._turn:  # an infrastructure retry started the episode again
            self.versions.clear()
        self._turn = turn
        self._source._check(self.versions)
        completion = self._policy.complete(messages, tools, **kw)
        if turn >= self._last_turn:
            self._joined.close()
        if completion.weights_version is not None:
            self.versions.append(completion.weights_version)
        self._source._sampled(completion)
        return completion


def _blank(job: Job) -> Episode:
    return unfinished(job, "")


def _unused(episode: Episode, why: str, problem: str | None = None) -> Episode:
    """The episode as one that brings nothing to train on (like an infrastructure failure)."""
    return dataclasses.replace(
        episode, trajectory=None, termination=why, infra_error=problem or why
    )
