"""Expert trajectories: what one is, where it comes from, and the policy made to replay it.

An expert is a verified trajectory of one task (docs/ipa.md, "Chunk-Level Initialized
Resampling"), from one of three sources: the task's oracle solution (its expert commands as
replies, one ```bash block per turn, then `submit`), a teacher model's verified successes, and
the policy's own successes. It is kept only when the verifier passes its episode.

Replaying it is the same harness as the policy's: `ForcedModel` says the expert's replies in
order; `ResumedModel` says the first `start` of them (marked forced: context, never trained on)
and then lets the policy sample. Replies are tokenized with the policy's tokenizer and end with
its end-of-turn token, and the ids are remembered so later prompts continue from exactly those
ids, so SFT trains on the sequence the policy would have produced and chunking applies
unchanged. `ExpertStates` are the sandbox and loop states after each of an expert's turns,
recorded by replaying it once: a rollout that starts at turn k forks snapshot k instead of
running the expert's first k commands again (docs/ipa.md, "Initialize at chunk k").
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from rockroll.agent.loop import AgentConfig, AgentLoop, LoopState
from rockroll.agent.tools.command import task_tools
from rockroll.agent.trajectory import Trajectory
from rockroll.errors import ConfigError, ModelError, SandboxError
from rockroll.models.local import LocalModel
from rockroll.models.messages import Completion, Message
from rockroll.sandbox.sdk import Sandbox, Snapshot
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import open_sandbox, task_image
from rockroll.train.sampler import load_tasks

Source = Literal["oracle", "teacher", "policy"]
EXPERT_KEY = "expert_commands"


@dataclass(eq=False)
class Expert:
    """A verified expert trajectory of one task: its replies (one per turn, the last submits),
    where it came from, and, once recorded, the sandbox states after each of its turns."""

    task_id: str
    replies: list[str]
    source: Source = "oracle"
    step: int = 0  # the training step it was found at (policy successes are refreshed)
    states: ExpertStates | None = field(default=None, repr=False)

    @property
    def turns(self) -> int:
        return len(self.replies)

    def record(self) -> dict:
        return {
            "task_id": self.task_id,
            "replies": self.replies,
            "source": self.source,
            "step": self.step,
        }


# -- where experts come from ---------------------------------------------------------------------
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


def dataset_experts(dataset: Path) -> list[tuple[Task, Expert]]:
    """The verified trajectories a dataset holds (DATASET/trajectories/MODEL/ATTEMPT/TASK.json)
    as experts of its tasks; a ConfigError when it has none."""
    tasks = {t.id: t for t in load_tasks(f"data:{dataset}", "sft.data")}
    found = []
    for path in sorted((dataset / "trajectories").glob("*/*/*.json")):
        task = tasks.get(path.stem.replace("__", "/"))
        if task is not None:
            replies = replies_of(Trajectory.load(path))
            found.append((task, Expert(task.id, replies, "teacher")))
    if not found:
        raise ConfigError(
            f"sft.data: no verified trajectories of its tasks in {dataset / 'trajectories'} "
            "(make some with `rockroll data trajectories`)"
        )
    return found


def replies_of(trajectory: Trajectory) -> list[str]:
    """What the agent said at each turn of a trajectory, forced turns included."""
    return [s.message for s in trajectory.steps if s.source == "agent"]


def success_expert(
    task_id: str, trajectory: Trajectory, source: Source, step: int = 0
) -> Expert | None:
    """A verified success (a teacher's, or the policy's own) as an expert; None when it has no
    turns. The caller checks that the verifier passed it."""
    replies = replies_of(trajectory)
    return Expert(task_id, replies, source, step) if replies else None


# -- replaying an expert -------------------------------------------------------------------------
class ForcedModel:
    """The policy, forced to say `replies` in order; `forced` marks the completions as context.

    The reply is chosen by the number of assistant turns already in the conversation, so an
    episode run again (an infrastructure retry) starts the script again by itself.
    """

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str], *, forced: bool = False) -> None:
        self.policy = policy
        self.replies = replies
        self.forced = forced
        self.name = f"expert:{policy.name}"
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        turn = sum(m.role == "assistant" for m in messages)
        if turn >= len(self.replies):
            raise ModelError(f"the expert has no reply after {turn}")
        text = self.replies[turn]
        prompt = self.policy.prompt_ids(messages, tools)
        ids = self.policy.tokenizer.encode(text, add_special_tokens=False)
        ids.append(self.policy.end_of_turn_id)
        self.policy.remember(prompt, ids)
        return Completion(
            message=Message(role="assistant", content=text),
            finish_reason="stop",
            prompt_tokens=len(prompt),
            completion_tokens=len(ids),
            prompt_token_ids=prompt,
            token_ids=ids,
            logprobs=[0.0] * len(ids),
            forced=self.forced,
        )


class ResumedModel:
    """The policy restarted at turn `start` of an expert trajectory (docs/ipa.md, "Initialize at
    chunk k"): the expert's first `start` replies are imposed and marked forced, and from then
    on the policy samples as usual."""

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str], start: int) -> None:
        if not 0 <= start < len(replies):
            raise ValueError(
                f"start must be in [0, {len(replies)}), the expert's turns; got {start}"
            )
        self.policy = policy
        self.start = start
        self.expert = ForcedModel(policy, replies[:start], forced=True)
        self.name = policy.name
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self, messages: list[Message], tools: list[dict] | None, **kw: object
    ) -> Completion:
        if sum(m.role == "assistant" for m in messages) < self.start:
            return self.expert.complete(messages, tools)
        return self.policy.complete(messages, tools, **kw)  # type: ignore[arg-type]


# -- states along an expert, for fork-based starts -----------------------------------------------
class ExpertStates:
    """Snapshot and loop state after each of an expert's turns but the last (its submit)."""

    def __init__(self, snapshots: dict[int, Snapshot], states: dict[int, LoopState]) -> None:
        self.snapshots, self.states = snapshots, states
        self._lock = threading.Lock()

    @classmethod
    def record(
        cls, policy: LocalModel, task: Task, expert: Expert, agent_cfg: AgentConfig
    ) -> ExpertStates:
        """Replay the expert's turns before its last and keep the state after each. A task with
        Compose services keeps none: a fork would need its services forked too, so its
        episodes that start along the expert replay it in a fresh sandbox instead."""
        prefix = expert.replies[:-1]
        snapshots: dict[int, Snapshot] = {}
        states: dict[int, LoopState] = {}
        if task.environment.services:
            return cls(snapshots, states)
        cfg = replace(agent_cfg, max_turns=len(prefix), temperature=0.0)
        with open_sandbox(task, task_image(task)) as sandbox:

            def keep(state: LoopState) -> None:
                k = state.turns
                if 1 <= k <= len(prefix) and k not in snapshots:
                    snapshots[k] = sandbox.snapshot()
                    states[k] = state.model_copy(deep=True)

            try:
                if prefix:
                    model = ForcedModel(policy, prefix, forced=True)
                    loop = AgentLoop(model, config=cfg, tools=task_tools(task))  # type: ignore[arg-type]
                    loop.run(task.instruction, sandbox, on_step=keep)
            except BaseException:
                for snap in snapshots.values():
                    snap.remove()
                raise
        return cls(snapshots, states)

    def has(self, start: int) -> bool:
        return start in self.snapshots

    def resume(self, start: int, policy: LocalModel) -> tuple[Sandbox, LoopState]:
        """A new sandbox forked at turn `start` and the loop state to continue from there."""
        with self._lock:
            if start not in self.snapshots:
                raise SandboxError(f"no snapshot at expert turn {start} (removed)")
            snapshot = self.snapshots[start]
            state = self.states[start].model_copy(deep=True)
        state.trajectory.session_id = uuid.uuid4().hex  # an episode of its own, not the replay
        sandbox = snapshot.fork()
        # The forced turns' exact ids, so the next prompt continues from them.
        for step in state.trajectory.steps:
            m = step.metrics
            if step.source == "agent" and m and m.prompt_token_ids and m.completion_token_ids:
                policy.remember(m.prompt_token_ids, m.completion_token_ids)
        return sandbox, state

    def close(self) -> None:
        """Remove the snapshots; one a running fork still uses stays until a later close."""
        with self._lock:
            for start, snap in list(self.snapshots.items()):
                with contextlib.suppress(SandboxError):
                    snap.remove()
                    del self.snapshots[start]
                    self.states.pop(start, None)

    def ids(self) -> list[str]:
        return [s.id for s in self.snapshots.values()]
