"""Expert trajectories: where they come from, and episodes played or resumed from them.

Three sources (ipa.md, "Chunk-Level Initialized Resampling"): a task's oracle solution (its
expert commands as replies, one ```bash block per turn, then `submit`), a teacher model's
verified successes, and the policy's own successes. An expert is kept only when the verifier
passes its episode. The expert's replies are played by the policy's tokenizer (`ForcedModel`),
so SFT trains on the sequence the policy would have produced and chunking applies unchanged.
"""

from __future__ import annotations

from rockroll.agent.local import LocalModel
from rockroll.agent.loop import AgentConfig
from rockroll.agent.models import Model
from rockroll.agent.trajectory import Trajectory
from rockroll.tasks.model import Task
from rockroll.train.config import RolloutConfig
from rockroll.train.forced import Expert, ForcedModel, ResumedModel
from rockroll.train.rollout import Episode, Job, collect, run_episode

__all__ = ["Expert", "ForcedModel", "ResumedModel", "expert_episode", "expert_replies"]

EXPERT_KEY = "expert_commands"


def expert_replies(task: Task, action_format: str = "bash") -> list[str]:
    """The task's expert commands as replies in the action format, ending with a submit."""
    commands = getattr(task.metadata, EXPERT_KEY, None)
    if not commands:
        raise ValueError(f"{task.id} has no {EXPERT_KEY} in its metadata")
    if action_format != "bash":
        raise ValueError(f"expert replies are written in the bash format, not {action_format}")
    return [f"```bash\n{command}\n```" for command in [*commands, "submit"]]


def oracle_expert(task: Task, action_format: str = "bash") -> Expert:
    return Expert(task.id, expert_replies(task, action_format), "oracle")


def replies_of(trajectory: Trajectory) -> list[str]:
    """What the agent said at each turn of a trajectory, forced turns included."""
    return [s.message for s in trajectory.steps if s.source == "agent"]


def success_expert(episode: Episode, source: str, step: int = 0) -> Expert | None:
    """A verified success as an expert (a teacher's, or the policy's own), else None."""
    if not episode.passed or episode.trajectory is None:
        return None
    replies = replies_of(episode.trajectory)
    if not replies:
        return None
    return Expert(episode.task.id, replies, source, step)  # type: ignore[arg-type]


def teacher_experts(teacher: Model, tasks: list[Task], cfg: RolloutConfig) -> list[Expert]:
    """A teacher model's verified successes (one greedy episode per task) as experts."""
    episodes = collect(teacher, [Job(t, 0) for t in tasks], cfg, temperature=0.0)  # type: ignore[arg-type]
    return [x for e in episodes if (x := success_expert(e, "teacher")) is not None]


def _agent_cfg(cfg: RolloutConfig, max_turns: int, *, seed: int = 0) -> AgentConfig:
    return AgentConfig(
        seed=seed,
        max_turns=max_turns,
        max_tokens_per_turn=cfg.max_tokens_per_turn,
        temperature=cfg.temperature,
        action_format=cfg.action_format,
        context_mode="linear",
        command_timeout=cfg.command_timeout,
    )


def expert_episode(
    policy: LocalModel, task: Task, cfg: RolloutConfig, expert: Expert | None = None
) -> Episode:
    """The expert's episode on `task` (its oracle by default); check `passed` before training."""
    expert = expert or oracle_expert(task, cfg.action_format)
    forced = ForcedModel(policy, expert.replies)
    return run_episode(forced, Job(task, 0), _agent_cfg(cfg, expert.turns), cfg)  # type: ignore[arg-type]


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
    return run_episode(policy, job, _agent_cfg(cfg, cfg.max_turns, seed=seed), cfg)
