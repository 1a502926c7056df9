"""Sandbox states along an expert trajectory, for fork-based initialization.

The expert is replayed once in a real sandbox; after each of its turns the sandbox is
snapshotted and the loop's state (messages, trajectory, tools' state) copied. A rollout that
starts at turn k then forks snapshot k and continues from state k, instead of creating a fresh
sandbox and running the expert's first k commands again (ipa.md, "Initialize at chunk k").
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import replace

from rockroll.agent.local import LocalModel
from rockroll.agent.loop import AgentConfig, AgentLoop, LoopState
from rockroll.sandbox.errors import SandboxError
from rockroll.sandbox.sdk import Sandbox, Snapshot
from rockroll.tasks.model import Task
from rockroll.tasks.workspace import open_sandbox, task_image
from rockroll.train.forced import Expert, ForcedModel


class ExpertStates:
    """Snapshot and loop state after each of an expert's turns but the last (its submit)."""

    def __init__(self, snapshots: dict[int, Snapshot], states: dict[int, LoopState]) -> None:
        self.snapshots, self.states = snapshots, states
        self._lock = threading.Lock()

    @classmethod
    def record(
        cls, policy: LocalModel, task: Task, expert: Expert, agent_cfg: AgentConfig
    ) -> ExpertStates:
        """Replay the expert's turns before its last and keep the state after each."""
        prefix = expert.replies[:-1]
        snapshots: dict[int, Snapshot] = {}
        states: dict[int, LoopState] = {}
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
                    AgentLoop(model, config=cfg).run(task.instruction, sandbox, on_step=keep)  # type: ignore[arg-type]
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
