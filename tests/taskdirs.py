"""Task folders written by tests, in the formats the loaders read (our own fixtures)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import TaskResult, run_task
from rockroll.tasks.schema import Task

SOLVE = "mkdir -p /app && echo yes > /app/done\n"
CHECK = (
    "if grep -q yes /app/done 2>/dev/null; then echo 1 > /logs/verifier/reward.txt\n"
    "else echo 0 > /logs/verifier/reward.txt; fi\n"
)


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(mode)


def harbor(
    root: Path,
    name: str,
    *,
    toml: str = "",
    solve: str = SOLVE,
    test: str = CHECK,
    instruction: str = "Create /app/done containing the word yes.\n",
    dockerfile: str | None = None,
    extra_tests: dict[str, str] | None = None,
    extra_solution: dict[str, str] | None = None,
    extra_environment: dict[str, str] | None = None,
) -> Path:
    """A Harbor / Terminal-Bench 2.x task folder."""
    task = root / name
    write(task / "instruction.md", instruction)
    write(task / "task.toml", toml)
    write(task / "solution" / "solve.sh", solve, 0o755)
    write(task / "tests" / "test.sh", test, 0o755)
    for folder, extra in (
        ("tests", extra_tests),
        ("solution", extra_solution),
        ("environment", extra_environment),
    ):
        for rel, text in (extra or {}).items():
            write(task / folder / rel, text)
    if dockerfile is not None:
        write(task / "environment" / "Dockerfile", dockerfile)
    return task


def terminal_bench(
    root: Path, name: str, *, run_tests: str, tests: dict[str, str], solution: str
) -> Path:
    """A Terminal-Bench 1.0 task folder (pytest parser)."""
    task = root / name
    write(
        task / "task.yaml",
        """
        instruction: Write hello to /app/out.txt
        category: tb
        max_agent_timeout_sec: 60
        max_test_timeout_sec: 60
        """,
    )
    write(task / "Dockerfile", "FROM python:3.11-slim\nWORKDIR /app\n")
    write(task / "solution.sh", solution, 0o755)
    write(task / "run-tests.sh", run_tests, 0o755)
    for rel, text in tests.items():
        write(task / "tests" / rel, text)
    return task


def controls(task: Task) -> tuple[TaskResult, TaskResult]:
    """The paired controls every task fixture must meet: the oracle passes, noop fails the
    tests (fresh sandboxes each); both results."""
    oracle, noop = run_task(task, OracleAgent()), run_task(task, NoopAgent())
    assert oracle.passed and oracle.reward == 1.0, (
        oracle.reason,
        oracle.error,
        oracle.verifier_tail,
        oracle.agent_tail,
    )
    assert not noop.passed and noop.reason == "tests-failed", noop
    return oracle, noop
