"""Harbor / Terminal-Bench 2.x task folders, our own task format.

instruction.md            what the agent is told
task.toml                 [metadata], [agent] timeout_sec, [verifier] timeout_sec,
                          [environment] cpus, memory_mb (or memory), storage_mb (the
                          disk limit), allow_internet
environment/Dockerfile    the environment (build context: environment/)
solution/solve.sh         the reference solution
tests/test.sh             writes /logs/verifier/reward.txt (or reward.json)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from rockroll.errors import TaskError
from rockroll.tasks.schema import Environment, Metadata, Resources, Solution, Task, Verifier

REWARD_FILES = ["/logs/verifier/reward.txt", "/logs/verifier/reward.json"]


def is_harbor(path: Path) -> bool:
    return (path / "task.toml").is_file()


def load_harbor(path: Path) -> Task:
    path = Path(path)
    task_id = path.name
    meta = _toml(path / "task.toml", task_id)
    instruction_file = path / "instruction.md"
    if not instruction_file.is_file() or not instruction_file.read_text().strip():
        raise TaskError(task_id, "invalid-task", f"{instruction_file} is missing or empty")
    if not (path / "tests" / "test.sh").is_file():
        raise TaskError(task_id, "invalid-task", f"{path / 'tests' / 'test.sh'} is missing")
    env_table = meta.get("environment", {})
    dockerfile = path / "environment" / "Dockerfile"
    environment = (
        Environment(dockerfile=dockerfile, context=dockerfile.parent)
        if dockerfile.is_file()
        else Environment(image=env_table.get("image", "base"), workdir=env_table.get("workdir"))
    )
    solve = path / "solution" / "solve.sh"
    info = meta.get("metadata", {})
    return Task(
        id=task_id,
        source="harbor",
        path=path,
        instruction=instruction_file.read_text(),
        environment=environment,
        resources=Resources(
            memory=_memory(env_table),
            cpus=float(env_table.get("cpus", 1.0)),
            disk=f"{int(env_table['storage_mb'])}m" if "storage_mb" in env_table else "10g",
        ),
        network="full" if env_table.get("allow_internet") else "none",
        agent_timeout=float(meta.get("agent", {}).get("timeout_sec", 600.0)),
        verifier=Verifier(
            command="mkdir -p /logs/verifier && bash /tests/test.sh",
            files={"/tests": path / "tests"},
            reward_files=REWARD_FILES,
            timeout=float(meta.get("verifier", {}).get("timeout_sec", 120.0)),
        ),
        solution=Solution(script=solve.read_text()) if solve.is_file() else None,
        metadata=Metadata(
            difficulty=info.get("difficulty"),
            category=info.get("category"),
            tags=list(info.get("tags", [])),
        ),
    )


def _memory(env: dict) -> str:
    """Harbor's `memory_mb`, or an older `memory` like "2G"."""
    if "memory_mb" in env:
        return f"{int(env['memory_mb'])}m"
    return str(env.get("memory", "2g"))


def _toml(path: Path, task_id: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(task_id, "invalid-task", f"{path} is not valid TOML: {exc}") from None
