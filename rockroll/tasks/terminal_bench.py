"""Terminal-Bench 1.0 task folders: task.yaml, Dockerfile, solution.sh, run-tests.sh, tests/."""

from __future__ import annotations

from pathlib import Path

import yaml

from rockroll.errors import TaskError
from rockroll.tasks.compose import compose_settings
from rockroll.tasks.schema import Environment, Metadata, Solution, Task, Verifier

TEST_DIR = "/tests"


def is_terminal_bench(path: Path) -> bool:
    return (path / "task.yaml").is_file()


def load_terminal_bench(path: Path) -> Task:
    """One task folder; errors name the file and what is missing."""
    path = Path(path)
    task_id = path.name
    meta = _yaml(path / "task.yaml", task_id)
    instruction = meta.get("instruction") or _descriptions(meta)
    if not isinstance(instruction, str) or not instruction.strip():
        raise TaskError(task_id, "invalid-task", f"{path / 'task.yaml'} has no `instruction`")
    for required in ("Dockerfile", "run-tests.sh"):
        if not (path / required).is_file():
            raise TaskError(task_id, "invalid-task", f"{path / required} is missing")
    files: dict[str, Path | str] = {f"{TEST_DIR}/run-tests.sh": path / "run-tests.sh"}
    if (path / "tests").is_dir():
        files[TEST_DIR] = path / "tests"
    solution = None
    if (path / "solution.sh").is_file():
        solution = Solution(script=(path / "solution.sh").read_text())
    return Task(
        id=task_id,
        source="terminal-bench",
        path=path,
        instruction=instruction,
        environment=Environment(
            dockerfile=path / "Dockerfile",
            context=path,
            **compose_settings(path, task_id, path),
        ),
        agent_timeout=float(meta.get("max_agent_timeout_sec", 600.0)),
        verifier=Verifier(
            command=f"bash {TEST_DIR}/run-tests.sh",
            files=files,
            env={"TEST_DIR": TEST_DIR},
            parser="pytest" if meta.get("parser_name", "pytest") == "pytest" else "exit_code",
            timeout=float(meta.get("max_test_timeout_sec", 120.0)),
        ),
        solution=solution,
        metadata=Metadata(
            difficulty=meta.get("difficulty"),
            category=meta.get("category"),
            tags=list(meta.get("tags") or []),
        ),
    )


def _yaml(path: Path, task_id: str) -> dict:
    if not path.is_file():
        raise TaskError(task_id, "invalid-task", f"{path} is missing")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TaskError(task_id, "invalid-task", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TaskError(task_id, "invalid-task", f"{path} must be a mapping")
    return data


def _descriptions(meta: dict) -> str | None:
    """Older Terminal-Bench tasks keep the instruction under `descriptions`."""
    for item in meta.get("descriptions") or []:
        if isinstance(item, dict) and item.get("key", "base") == "base":
            return item.get("description")
    return None
