"""Episodes for training and evaluation: the harness, in real sandboxes, scored by the verifier.

Every episode runs the same `AgentLoop` that evaluation and users run, in `linear` context mode
so each prompt is a prefix of the next. Episodes run in threads; the local policy batches their
model calls. An episode spoiled by the infrastructure (a sandbox that failed to start or died,
a verifier that crashed) is not a policy failure: it is run again at once from the same task
and seed, up to `max_infra_retries` times, and dropped if it never completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

from rockroll.agent.local import LocalModel
from rockroll.agent.loop import AgentConfig, AgentLoop, RunResult
from rockroll.agent.trajectory import Trajectory
from rockroll.sandbox.errors import SandboxError
from rockroll.tasks.model import Task, TaskError
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import open_sandbox, task_image
from rockroll.train.config import RolloutConfig
from rockroll.train.forced import Expert, ResumedModel


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
    version: int | None = None  # distributed: the policy version (updates applied) it used


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
    # Episodes announce themselves to a batching policy, so their calls share decoding batches.
    joined: Callable[[], AbstractContextManager[object]] = getattr(policy, "joined", nullcontext)

    def one(job: Job) -> Episode:
        with joined():
            episode = run_episode(policy, job, agent_config(cfg, job.seed, temperature), cfg)
        on_episode(episode)
        return episode

    # A batching policy decodes on this thread while the episodes run on the pool's.
    drive = getattr(policy, "drive", None)
    if cfg.workers == 1 and drive is None:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(min(cfg.workers, len(jobs)) or 1) as pool:
        futures: list[Future[Episode]] = []

        def start() -> None:
            futures.extend(pool.submit(one, job) for job in jobs)

        if drive is None:
            start()
        else:
            drive(lambda: all(f.done() for f in futures), start)
        return [f.result() for f in futures]


def agent_config(cfg: RolloutConfig, seed: int, temperature: float | None = None) -> AgentConfig:
    """The harness settings of a rollout episode (`temperature` overrides the rollouts')."""
    return AgentConfig(
        max_turns=cfg.max_turns,
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
        try:
            result, reward, passed, init = _attempt(policy, job, agent_cfg)
        except (SandboxError, TaskError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
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


def _attempt(
    policy: LocalModel, job: Job, agent_cfg: AgentConfig
) -> tuple[RunResult, float, bool, str]:
    task, model, state, sandbox, init = job.task, policy, None, None, "fresh"
    if job.start:
        assert job.expert is not None
        agent_cfg = replace(agent_cfg, max_turns=agent_cfg.max_turns + job.start)
        states = job.expert.states
        if states is not None and states.has(job.start):
            try:
                sandbox, state = states.resume(job.start, policy)
                init = "fork"
            except SandboxError:
                pass  # the snapshot is gone or will not start: replay instead
        if sandbox is None:
            model, init = ResumedModel(policy, job.expert.replies, job.start), "replay"
    with sandbox or open_sandbox(task, task_image(task)) as sandbox:
        loop = AgentLoop(model, config=agent_cfg)  # type: ignore[arg-type]
        instruction = task.instruction if state is None else None
        result = loop.run(instruction, sandbox, state=state)
        if result.termination == "sandbox_error":
            raise SandboxError(result.error or "the sandbox failed during the episode")
        verdict = verify(task, sandbox)
    return result, float(verdict.reward), bool(verdict.passed), init
