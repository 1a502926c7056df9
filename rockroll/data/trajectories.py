"""Trajectory: the harness with a chosen model on a dataset's accepted tasks, a few attempts
each; the verified trajectories are kept, each task's pass rate is its difficulty.

    DATASET/trajectories/MODEL/ATTEMPT/TASK.json   verified trajectories only (ATIF)
    DATASET/attempts/MODEL/ATTEMPT/results.jsonl   every attempt's result, as the bench writes
                                                   it (so an interrupted run resumes)
    DATASET/manifest.jsonl                         a `difficulty` line per task and model
                                                   (run again, the newest one holds)

`--model oracle` is the reference change as the agent's own tool calls (the task's
`expert_commands`, one bash block a turn, then submit), replayed by the scripted backend: the
trajectories SFT and resampling start from when no teacher is at hand. A task's difficulty for a
model: `easy` when every attempt passed, `hard` when none did, else `moderate`, the tasks the
paper's RL selection keeps (`data:DATASET?moderate`). It is written into the task's
`task.toml` too, so any reader of the folder sees it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from rockroll.bench.agents import HarnessAgent, task_file
from rockroll.bench.runner import TaskResult, run_suite
from rockroll.data.manifest import Manifest
from rockroll.errors import UsageError
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite
from rockroll.train.expert import expert_replies

ORACLE = "oracle"


def model_slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")[:60] or "model"


def difficulty(rate: float) -> str:
    return "easy" if rate >= 1.0 else "hard" if rate <= 0.0 else "moderate"


def make_trajectories(
    dataset: Path,
    model: str,
    *,
    attempts: int = 8,
    jobs: int = 2,
    max_turns: int = 30,
    temperature: float = 0.8,
    on_result: Callable[[TaskResult], None] = lambda r: None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, dict]:
    """Run every accepted task `attempts` times with `model` (once for the oracle); keep the
    verified trajectories; label each task. Returns task id → {passes, attempts, difficulty}."""
    tasks = _tasks(dataset)
    slug = model_slug(model)
    spec, settings = model, {"max_turns": max_turns, "temperature": temperature}
    if model == ORACLE:
        spec, settings, attempts = _oracle_scripts(dataset, tasks), {"action_format": "bash"}, 1
        settings["max_turns"] = max_turns
    passes: dict[str, int] = {t.id: 0 for t in tasks}
    for attempt in range(attempts):
        kept = dataset / "trajectories" / slug / str(attempt)
        agent = HarnessAgent(spec, trajectory_dir=kept, seed=attempt, **settings)
        out = dataset / "attempts" / slug / str(attempt)
        results = run_suite(tasks, agent, out, jobs=jobs, on_result=on_result, log=log)
        for r in results:
            passes[r.task] += r.passed
            if not r.passed and r.trajectory:
                Path(r.trajectory).unlink(missing_ok=True)  # only verified ones are kept
    labels = {}
    manifest = Manifest(dataset)
    for task in tasks:
        rate = passes[task.id] / attempts
        labels[task.id] = {
            "passes": passes[task.id],
            "attempts": attempts,
            "difficulty": difficulty(rate),
        }
        manifest.add({"kind": "difficulty", "task": task.id, "model": model, **labels[task.id]})
        if model != ORACLE:
            _label(task.path, labels[task.id]["difficulty"])
    return labels


def _tasks(dataset: Path) -> list[Task]:
    return [t for t in load_suite(f"data:{dataset}") if isinstance(t, Task)]


def _oracle_scripts(dataset: Path, tasks: list[Task]) -> str:
    """scripted:FOLDER holding, per task, its expert commands as replies."""
    folder = dataset / "experts"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for task in tasks:
        try:
            replies = expert_replies(task)
        except ValueError:
            raise UsageError(f"{task.path}: no expert_commands in task.toml's [metadata]") from None
        (folder / f"{task_file(task.id)}.json").write_text(json.dumps(replies, indent=1))
    return f"scripted:{folder}"


def _label(task_dir: Path | None, label: str) -> None:
    if task_dir is None:
        return
    path = task_dir / "task.toml"
    text = path.read_text()
    path.write_text(re.sub(r'(?m)^difficulty = ".*"$', f'difficulty = "{label}"', text, count=1))
