"""Harbor / Terminal-Bench 2.x task folders, our own task format.

instruction.md            what the agent is told
task.toml                 [metadata] (its other keys kept: expert_commands, source...);
                          [agent] timeout_sec; [verifier] timeout_sec, env;
                          [solution] env; [environment] cpus, memory_mb (or memory = "2G"),
                          storage_mb (or storage = "10G": the disk limit), allow_internet,
                          docker_image (a prebuilt image, when there is no Dockerfile),
                          build_timeout_sec
environment/Dockerfile    the environment (build context: environment/)
solution/                 the reference solution: solve.sh and what it uses, copied to
                          /solution and run there, as Harbor's oracle does
tests/test.sh             writes /logs/verifier/reward.txt (or reward.json), run from the
                          environment's working directory

Values of the `env` tables may name host variables, `${NAME}` or `${NAME:-default}`, as Harbor
resolves them; a name that is unset and has no default is an error naming the table.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from rockroll.errors import TaskError
from rockroll.tasks.compose import compose_settings
from rockroll.tasks.schema import Environment, Metadata, Resources, Solution, Task, Verifier

REWARD_FILES = ["/logs/verifier/reward.txt", "/logs/verifier/reward.json"]
SOLUTION_DIR = "/solution"
_HOST_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


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
    env_table = _table(meta, "environment", task_id)
    verifier = _table(meta, "verifier", task_id)
    info = _table(meta, "metadata", task_id)
    environment = _environment(path, env_table, task_id)
    # A task with services runs on their private network: allowed the internet, it gets none.
    internet = bool(env_table.get("allow_internet")) and not environment.services
    return Task(
        id=task_id,
        source="harbor",
        path=path,
        instruction=instruction_file.read_text(),
        environment=environment,
        resources=Resources(
            memory=_size(env_table, "memory", "2g"),
            cpus=float(env_table.get("cpus", 1.0)),
            disk=_size(env_table, "storage", "10g"),
        ),
        network="full" if internet else "none",
        agent_timeout=float(_table(meta, "agent", task_id).get("timeout_sec", 600.0)),
        verifier=Verifier(
            command="mkdir -p /logs/verifier && bash /tests/test.sh",
            files={"/tests": path / "tests"},
            env=_env(verifier, "verifier", task_id),
            reward_files=REWARD_FILES,
            timeout=float(verifier.get("timeout_sec", 120.0)),
        ),
        solution=_solution(path, _env(_table(meta, "solution", task_id), "solution", task_id)),
        metadata=Metadata(
            difficulty=info.get("difficulty"),
            category=info.get("category"),
            tags=list(info.get("tags", [])),
            **{k: v for k, v in info.items() if k not in ("difficulty", "category", "tags")},
        ),
    )


def _environment(path: Path, table: dict, task_id: str) -> Environment:
    folder = path / "environment"
    dockerfile = folder / "Dockerfile"
    limit = table.get("build_timeout_sec")
    common = compose_settings(folder, task_id, folder)
    common["build_timeout"] = float(limit) if limit else None
    if dockerfile.is_file():
        return Environment(dockerfile=dockerfile, context=folder, **common)
    image = table.get("docker_image") or table.get("image") or "base"
    return Environment(image=str(image), workdir=table.get("workdir"), **common)


def _solution(path: Path, env: dict[str, str]) -> Solution | None:
    folder = path / "solution"
    solve = folder / "solve.sh"
    if not solve.is_file():
        return None
    return Solution(
        script=solve.read_text(),
        files={SOLUTION_DIR: folder},
        path=f"{SOLUTION_DIR}/solve.sh",
        env=env,
    )


def _size(table: dict, key: str, default: str) -> str:
    """Harbor's `KEY_mb` (a number of MiB), or an older `KEY` like "2G"."""
    if f"{key}_mb" in table:
        return f"{int(table[f'{key}_mb'])}m"
    return str(table.get(key, default)).lower()


def _env(table: dict, name: str, task_id: str) -> dict[str, str]:
    """`[NAME.env]` with `${HOST_VAR}` references resolved from this process's environment."""
    env = table.get("env", {})
    if not isinstance(env, dict):
        raise TaskError(task_id, "invalid-task", f"task.toml: [{name}.env] must be a table")

    def one(key: str, m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise TaskError(
                task_id,
                "invalid-task",
                f"task.toml: [{name}.env] {key} needs the host variable {m.group(1)}; set it, "
                f"or give a default as ${{{m.group(1)}:-value}}",
            )
        return value

    return {str(k): _HOST_VAR.sub(lambda m, k=k: one(k, m), str(v)) for k, v in env.items()}


def _table(meta: dict, name: str, task_id: str) -> dict:
    value = meta.get(name, {})
    if not isinstance(value, dict):
        raise TaskError(task_id, "invalid-task", f"task.toml: [{name}] must be a table")
    return value


def _toml(path: Path, task_id: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(task_id, "invalid-task", f"{path} is not valid TOML: {exc}") from None
