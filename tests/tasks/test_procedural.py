"""reasoning-gym tasks in real sandboxes: the oracle scores 1, wrong or missing answers do not."""

from __future__ import annotations

import importlib

import pytest
import reasoning_gym

from rockroll import Sandbox
from rockroll.errors import TaskError
from rockroll.tasks import procedural
from rockroll.tasks.procedural import load_procedural
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import put_files


def _sandbox(task: Task) -> Sandbox:
    env = task.environment
    return Sandbox.create(env.image or "base", workdir=env.workdir or "/", env=env.env)


def _verify(sb: Sandbox, task: Task) -> tuple[float, str]:
    """What a runner does for a python verifier: import "module:name", call it on the host."""
    verifier = task.verifier
    assert verifier.kind == "python" and verifier.function
    module, name = verifier.function.split(":")
    return getattr(importlib.import_module(module), name)(sb, verifier.args)


def _run(
    task: Task, *, oracle: bool = False, answer: str | None = None, written: list | None = None
) -> tuple[float, str]:
    """The verdict; `written` gets the answer file's text as the verifier found it."""
    with _sandbox(task) as sb:
        put_files(sb, task.files)
        if oracle:
            assert task.solution is not None
            res = sb.exec(["bash", "-c", task.solution.script], timeout=60)
            assert res.ok, res.output
        if answer is not None:
            sb.write_text("/app/answer.txt", answer)
        if written is not None and sb.exists("/app/answer.txt"):
            written.append(sb.read_text("/app/answer.txt"))
        return _verify(sb, task)


def _gym(name: str, seed: int, size: int, **config: object) -> list[dict]:
    """The dataset straight from reasoning-gym, independently of rockroll's loader."""
    dataset = reasoning_gym.create_dataset(name, seed=seed, size=size, **config)
    return [dataset[i] for i in range(size)]


@pytest.mark.parametrize("name", ["countdown", "basic_arithmetic", "rotate_matrix"])
def test_oracle_scores_one(base_image: str, name: str) -> None:
    tasks = load_procedural(name, seed=3, size=5)
    procedural._DATASETS.clear()  # scoring must rebuild the dataset from the args alone
    for task, entry in zip(tasks, _gym(name, 3, 5), strict=True):
        written: list[str] = []
        reward, detail = _run(task, oracle=True, written=written)
        assert written == [str(entry["answer"])], task.id  # the oracle writes the gym's answer
        assert reward == 1.0, (task.id, detail)


def test_task_shape() -> None:
    task = load_procedural("basic_arithmetic", seed=7, size=3, config={"min_terms": 2})[2]
    entry = _gym("basic_arithmetic", 7, 3, min_terms=2)[2]
    assert task.id == "rg/basic_arithmetic/7/2"
    assert task.instruction == (
        entry["question"].rstrip() + "\n\nWrite only your final answer to /app/answer.txt."
    )
    assert task.source == "reasoning-gym"
    assert task.environment.image == "base" and task.environment.workdir == "/app"
    assert task.verifier.function == "rockroll.tasks.procedural:score"
    assert task.verifier.args == {
        "dataset": "basic_arithmetic",
        "seed": 7,
        "size": 3,
        "index": 2,
        "config": {"min_terms": 2},
        "answer_file": "/app/answer.txt",
    }
    assert task.metadata.category == "basic_arithmetic"
    assert task.metadata.tags == ["reasoning-gym"]


def test_wrong_answer_scores_below_one(base_image: str) -> None:
    countdown = load_procedural("countdown", seed=1, size=1)[0]
    reward, _ = _run(countdown, answer="1 + 1\n")
    assert reward < 1.0
    arithmetic = load_procedural("basic_arithmetic", seed=1, size=1)[0]
    right = _gym("basic_arithmetic", 1, 1)[0]
    reward, detail = _run(arithmetic, answer=str(int(right["answer"]) + 1))
    assert reward < 1.0, detail
    reward, detail = _run(arithmetic, answer=right["answer"] + "\n")
    assert reward == 1.0, detail


def test_missing_answer_scores_zero(base_image: str) -> None:
    task = load_procedural("basic_arithmetic", seed=1, size=1)[0]
    reward, detail = _run(task)
    assert reward == 0.0
    assert detail == "no answer: /app/answer.txt does not exist"


def test_same_seed_same_tasks() -> None:
    first = load_procedural("countdown", seed=42, size=4)
    procedural._DATASETS.clear()
    again = load_procedural("countdown", seed=42, size=4)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    other = load_procedural("countdown", seed=43, size=4)
    assert [t.instruction for t in other] != [t.instruction for t in first]


def test_unknown_dataset_is_a_task_error() -> None:
    with pytest.raises(TaskError, match="rg/no_such_dataset/0"):
        load_procedural("no_such_dataset", seed=0, size=1)
