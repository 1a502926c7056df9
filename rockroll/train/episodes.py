"""Episodes for training and evaluation: the harness, in real sandboxes, scored by the verifier.

Every episode runs the same `AgentLoop` that evaluation and users run, in `linear` context mode
so each prompt is a prefix of the next. Episodes run in threads; a policy with batched decoding
(`BatchedDecoding`) batches their model calls. An episode spoiled by the infrastructure (a
sandbox that failed to start or died, a verifier that crashed) is not a policy failure: it is
run again at once from the same task and seed, up to `max_infra_retries` times, and dropped if
it never completes. An episode may start from turn k of an expert (`Job.start`): forked from the
expert's recorded states where it has them, else replayed in a fresh sandbox.

Each episode notes where its time went (`Episode.timings`): starting the sandbox, the model's
calls (queue and decode), the agent loop as a whole (model calls and tools) and verification.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from rockroll.agent.loop import AgentConfig, AgentLoop, LoopState, RunResult
from rockroll.agent.tools.command import task_tools
from rockroll.agent.trajectory import Trajectory
from rockroll.errors import SandboxError, TaskError
from rockroll.models.base import BatchedDecoding
from rockroll.models.local import LocalModel
from rockroll.safety import default_rules
from rockroll.safety.attacks import judge
from rockroll.sandbox.sdk import Sandbox
from rockroll.sandbox.watch import Rules
from rockroll.tasks.schema import Task
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import task_image, task_sandbox
from rockroll.train.chunks import ChunkedSequence, chunk_trajectory
from rockroll.train.config import RolloutConfig
from rockroll.train.expert import Expert, ForcedModel, ResumedModel, oracle_expert


@dataclass
class Episode:
    """One finished episode; `infra_error` set when it never completed (dropped from training)."""

    task: Task
    seed: int
    trajectory: Trajectory | None
    reward: float
    passed: bool
    termination: str
    turns: int
    seconds: float
    infra_retries: int = 0
    infra_error: str | None = None
    start: int = 0  # expert turns imposed before the policy acted (0: from the task's start)
    init: str = "fresh"  # how the start state was made: fresh, fork or replay
    worker: str = ""  # distributed: the node and process that ran it
    # The policy version (updates applied) of the weights that sampled it (asynchronous: its
    # first sampled turn); None where nobody tracks versions (synchronous rollouts).
    version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sandbox, model, loop, verify
    unsafe: list[str] = field(default_factory=list)  # ids of the rules what it ran matched
    # a red-team task's verdict on its attack (rockroll.safety.attacks.judge), else None
    attack: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    """An episode to run: a task and a seed, optionally from turn `start` of an expert."""

    task: Task
    seed: int
    start: int = 0
    expert: Expert | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.start and (self.expert is None or not 0 < self.start < self.expert.turns):
            raise ValueError(
                f"a job starting at expert turn {self.start} needs an expert with more turns"
            )


def collect(
    policy: LocalModel,
    jobs: list[Job],
    cfg: RolloutConfig,
    *,
    temperature: float | None = None,
    on_episode: Callable[[Episode], None] = lambda e: None,
) -> list[Episode]:
    """Run every job (task, seed); episodes come back in the order of `jobs`."""
    batched = isinstance(policy, BatchedDecoding)
    # Episodes announce themselves to a batching policy, so their calls share decoding batches.
    joined: Callable[[], AbstractContextManager[object]] = policy.joined if batched else nullcontext

    def one(job: Job) -> Episode:
        with joined():
            episode = run_episode(policy, job, agent_config(cfg, job.seed, temperature), cfg)
        on_episode(episode)
        return episode

    if cfg.workers == 1 and not batched:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(min(cfg.workers, len(jobs)) or 1) as pool:
        futures: list[Future[Episode]] = []

        def start() -> None:
            futures.extend(pool.submit(one, job) for job in jobs)

        if batched:  # the policy decodes on this thread while the episodes run on the pool's
            policy.drive(lambda: all(f.done() for f in futures), start)
        else:
            start()
        return [f.result() for f in futures]


def agent_config(
    cfg: RolloutConfig,
    seed: int = 0,
    temperature: float | None = None,
    *,
    max_turns: int | None = None,
) -> AgentConfig:
    """The harness settings of a rollout episode (`temperature` and `max_turns` override the
    rollouts')."""
    return AgentConfig(
        max_turns=cfg.max_turns if max_turns is None else max_turns,
        max_tokens_per_turn=cfg.max_tokens_per_turn,
        temperature=cfg.temperature if temperature is None else temperature,
        action_format=cfg.action_format,
        context_mode="linear",
        command_timeout=cfg.command_timeout,
        seed=seed,
    )


def run_episode(
    policy: LocalModel, job: Job, agent_cfg: AgentConfig, cfg: RolloutConfig
) -> Episode:
    """One episode, resampled from the same start while the infrastructure spoils it."""
    problem = ""
    for attempt in range(cfg.max_infra_retries + 1):
        started = time.monotonic()
        timings: dict[str, float] = {}
        unsafe: list[str] = []
        attack: dict[str, Any] = {}
        try:
            result, reward, passed, init = _attempt(
                policy, job, agent_cfg, timings, cfg, unsafe, attack
            )
        except (SandboxError, TaskError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if unsafe:
            reward -= cfg.unsafe_penalty
        return Episode(
            task=job.task,
            seed=job.seed,
            trajectory=result.trajectory,
            reward=reward,
            passed=passed,
            termination=result.termination,
            turns=result.turns,
            seconds=time.monotonic() - started,
            infra_retries=attempt,
            start=job.start,
            init=init,
            timings=timings,
            unsafe=unsafe,
            attack=attack or None,
        )
    return unfinished(job, "infra_error", problem, cfg.max_infra_retries)


def unfinished(job: Job, termination: str, problem: str | None = None, retries: int = 0) -> Episode:
    """An episode that never completed: nothing in it to train on."""
    return Episode(
        task=job.task,
        seed=job.seed,
        trajectory=None,
        reward=0.0,
        passed=False,
        termination=termination,
        turns=0,
        seconds=0.0,
        infra_retries=retries,
        infra_error=problem,
        start=job.start,
    )


def expert_episode(
    policy: LocalModel, task: Task, cfg: RolloutConfig, expert: Expert | None = None
) -> Episode:
    """The expert's episode on `task` (its oracle by default); check `passed` before training."""
    expert = expert or oracle_expert(task, cfg.action_format)
    forced = ForcedModel(policy, expert.replies)
    return run_episode(forced, Job(task, 0), agent_config(cfg, max_turns=expert.turns), cfg)  # type: ignore[arg-type]


def resumed_episode(
    policy: LocalModel,
    task: Task,
    start: int,
    cfg: RolloutConfig,
    *,
    seed: int = 0,
    expert: Expert | None = None,
) -> Episode:
    """An episode of the policy on `task` that begins after the expert's first `start` turns
    (forked from its recorded states if it has them, else replayed in a fresh sandbox);
    `start=0` is a plain episode from the task's start."""
    expert = expert or oracle_expert(task, cfg.action_format)
    if not 0 <= start < expert.turns:
        raise ValueError(f"start must be in [0, {expert.turns}), the expert's turns; got {start}")
    job = Job(task, seed, start, expert if start else None)
    return run_episode(policy, job, agent_config(cfg, seed), cfg)


def sequences_of(
    episodes: list[Episode], group_size: int, version: int | None = None
) -> tuple[list[ChunkedSequence], list[int]]:
    """Training sequences of the completed episodes and the group of each: a group is one
    task's episodes from one start state (its G episodes, unless some were resumed from an
    expert's turns). Where an episode was sampled by weights older than `version` (the
    learner's now), those weights are gone and mu stands in for pi_old (`old_is_mu`)."""
    seqs, groups = [], []
    ids: dict[tuple[int, int], int] = {}
    for i, e in enumerate(episodes):
        if e.trajectory is None:
            continue
        group = ids.setdefault((i // group_size, e.start), len(ids))
        gone = version is not None and e.version is not None and e.version < version
        for s in chunk_trajectory(e.trajectory, e.reward, passed=e.passed, on_break="split"):
            if any(s.response_mask):
                s.old_is_mu = gone
                seqs.append(s)
                groups.append(group)
    return seqs, groups


def _attempt(
    policy: LocalModel,
    job: Job,
    agent_cfg: AgentConfig,
    timings: dict[str, float],
    cfg: RolloutConfig,
    unsafe: list[str],
    attack: dict[str, Any],
) -> tuple[RunResult, float, bool, str]:
    task, model, state, sandbox, init = job.task, policy, None, None, "fresh"
    if job.start:
        assert job.expert is not None
        agent_cfg = replace(agent_cfg, max_turns=agent_cfg.max_turns + job.start)
        states = job.expert.states
        if states is not None and states.has(job.start):
            try:
                with _timed(timings, "sandbox"):
                    sandbox, state = states.resume(job.start, policy)
                init = "fork"
            except SandboxError:
                pass  # the snapshot is gone or will not start: replay instead
        if sandbox is None:
            model, init = ResumedModel(policy, job.expert.replies, job.start), "replay"
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            enforced = {"rules": default_rules()} if cfg.safety == "enforce" else {}
            with _timed(timings, "sandbox"):
                sandbox = stack.enter_context(task_sandbox(task, task_image(task), **enforced))
        else:
            stack.enter_context(sandbox)
        before = len(sandbox.events()) if cfg.safety != "off" else 0
        played = _play(
            task, model, state, sandbox, agent_cfg, timings, cfg.safety, before, cfg.end_on_unsafe
        )
        unsafe += played[3]
        attack.update(played[4] or {})
        return (*played[:3], init)


def _play(
    task: Task,
    model: Any,
    state: LoopState | None,
    sandbox: Sandbox,
    agent_cfg: AgentConfig,
    timings: dict[str, float],
    safety: str = "off",
    before: int = 0,
    end_on_unsafe: bool = False,
) -> tuple[RunResult, float, bool, list[str], dict[str, Any] | None]:
    """One episode in `sandbox`, verified: (the run, its reward, whether it passed, the ids
    of the shipped rules that what it ran matched, from event `before` on, and for a
    red-team task the verdict on its attack)."""
    timed = _TimedModel(model, timings)

    def stop_if_unsafe(now: LoopState) -> None:
        if now.termination is None and unsafe_rules(sandbox.events()[before:]):
            now.termination = "unsafe"

    with _timed(timings, "loop"):
        result = AgentLoop(timed, config=agent_cfg, tools=task_tools(task)).run(  # type: ignore[arg-type]
            task.instruction if state is None else None,
            sandbox,
            state=state,
            on_step=stop_if_unsafe if end_on_unsafe and safety != "off" else lambda s: None,
        )
    if result.termination == "sandbox_error":
        raise SandboxError(result.error or "the sandbox failed during the episode")
    events = sandbox.events()[before:] if safety != "off" else []
    unsafe = unsafe_rules(events)
    redteam = getattr(task.metadata, "redteam", None)
    attack = judge(events, redteam) if isinstance(redteam, dict) and safety != "off" else None
    with _timed(timings, "verify"):
        verdict = verify(task, sandbox)
    return result, float(verdict.reward), bool(verdict.passed), unsafe, attack


def unsafe_rules(events: list[dict[str, Any]]) -> list[str]:
    """The ids of the shipped rules that a sandbox's events match, checked here (so episodes
    forked from snapshots count the same as fresh ones), in order, without repeats."""
    rules = Rules(default_rules())
    found: list[str] = []
    for event in events:
        for rule in rules.check(event):
            if rule.id not in found:
                found.append(rule.id)
    return found


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.monotonic() - started


class _TimedModel:
    """An episode's model, adding the seconds of its calls (queue and decode) to `timings`."""

    def __init__(self, model: Any, timings: dict[str, float]) -> None:
        self._model, self._timings = model, timings
        self._timings.setdefault("model", 0.0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        with _timed(self._timings, "model"):
            return self._model.complete(*args, **kwargs)
