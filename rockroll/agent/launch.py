"""Set up an agent run from command-line choices, new or resumed: model, sandbox, state.

Shared by `rockroll agent run` and `rockroll agent chat`. A new run gets a detached sandbox
(it outlives a crash, so `--resume` finds it again) and a saved session; a resumed run
reconnects to its sandbox or rebuilds it by replaying the recorded tool calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.agent import sessions
from rockroll.agent.loop import AgentConfig, AgentLoop, LoopState
from rockroll.agent.sessions import SessionRecord
from rockroll.agent.tools import CommandRules
from rockroll.errors import ModelError, UsageError
from rockroll.models import Model, make_model
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task

# Idle seconds after which a left-behind session sandbox may be collected by `sandbox gc`.
SANDBOX_TTL = 3600.0


@dataclass
class Launch:
    """Everything a CLI command needs to drive one session."""

    record: SessionRecord
    loop: AgentLoop
    sandbox: Sandbox
    task: Task | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> LoopState:
        return self.record.state

    def save(self, state: LoopState) -> None:
        """After every step: the session record, and the trajectory next to it."""
        self.record.state = state
        sessions.save(self.record)

    def trajectory_path(self) -> Path:
        return sessions.session_dir(self.record.id) / "trajectory.json"


def model_from_spec(spec: str, retries: int | None = None) -> Model:
    options = {} if retries is None else {"max_retries": retries}
    try:
        return make_model(spec, **options)
    except (ModelError, ValueError) as exc:
        raise UsageError(f"--model: {exc}") from None


def start(
    *,
    instruction: str | None,
    model_spec: str,
    config: AgentConfig,
    task_dir: str | None = None,
    image: str = "base",
    workdir: str = "/root",
    kind: str = "run",
    rules: CommandRules | None = None,
    retries: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Launch:
    """A new session: the sandbox (from the task, or the image) and the first messages."""
    from rockroll.tasks.suites import load_task
    from rockroll.tasks.workspace import task_image

    model = model_from_spec(model_spec, retries)
    task = load_task(Path(task_dir)) if task_dir else None
    instruction = instruction or (task.instruction if task else None)
    if not instruction and kind == "run":
        raise UsageError("give an instruction, or --task DIR")
    loop = AgentLoop(model, config=config, rules=rules)
    if task is not None:
        sandbox = _task_sandbox(task, task_image(task, log))
    else:
        sandbox = Sandbox.create(image, workdir=workdir, detached=True, ttl=SANDBOX_TTL)
    workdir = sandbox.spec.workdir
    state = loop.start(instruction or "", workdir) if instruction else _chat_state(loop, workdir)
    record = sessions.new_record(
        state,
        config,
        kind=kind,
        instruction=instruction or "",
        model=model_spec,
        task=str(Path(task_dir).resolve()) if task_dir else None,
        image=sandbox.spec.image,
        workdir=workdir,
        sandbox_id=sandbox.id,
    )
    return Launch(record, loop, sandbox, task)


def resume(
    session: str,
    *,
    model_spec: str | None,
    rules: CommandRules | None = None,
    retries: int | None = None,
    log: Callable[[str], None] = lambda line: None,
    **overrides: object,
) -> Launch:
    """Continue a saved session: its model (unless another is given), limits and sandbox."""
    from rockroll.tasks.suites import load_task
    from rockroll.tasks.workspace import task_image

    record = sessions.load(session)
    record.model = model_spec or record.model
    config = record.agent_config(**overrides)
    config.max_turns += record.state.turns  # a resumed run gets its turn budget afresh
    record.config = {**record.config, **{k: v for k, v in overrides.items() if v is not None}}
    loop = AgentLoop(model_from_spec(record.model, retries), config=config, rules=rules)
    task = load_task(Path(record.task)) if record.task else None
    launch_notes: list[str] = []
    sandbox = sessions.reconnect(record)
    if sandbox is not None:
        launch_notes.append(f"reconnected to sandbox {sandbox.id}")
    else:
        if task is not None:
            sandbox = _task_sandbox(task, task_image(task, log))
        else:
            sandbox = Sandbox.create(
                record.image, workdir=record.workdir, detached=True, ttl=SANDBOX_TTL
            )
        problems = sessions.replay(loop, record.state, sandbox, record.workdir)
        launch_notes.append(
            f"sandbox {record.sandbox_id} is gone; rebuilt it as {sandbox.id} by replaying "
            "the recorded tool calls"
        )
        launch_notes += problems
        record.sandbox_id = sandbox.id
    return Launch(record, loop, sandbox, task, launch_notes)


def _task_sandbox(task: Task, image: object) -> Sandbox:
    from rockroll.tasks.workspace import open_sandbox

    return open_sandbox(task, image, detached=True, ttl=SANDBOX_TTL)  # type: ignore[arg-type]


def _chat_state(loop: AgentLoop, workdir: str) -> LoopState:
    """A chat's state before its first message: the system prompt only."""
    state = loop.start("", workdir)
    state.messages.pop()
    state.trajectory.steps.pop()
    return state
