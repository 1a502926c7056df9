"""The Terminal-Bench 1.0 loader on the 63 real task folders, and on broken copies of one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from rockroll.errors import TaskError
from rockroll.tasks.terminal_bench import is_terminal_bench, load_terminal_bench
from tests.paths import TASKS, needs

SETS = {
    # folder: (number of tasks, category, max_test_timeout_sec, max_agent_timeout_sec)
    "evoeval": (46, "python_programming", 120.0, 600.0),
    "aider-polyglot-python": (17, "coding-exercises", 1800.0, 1800.0),
}
FOLDERS = sorted(p for name in SETS for p in (TASKS / name).glob("*") if p.is_dir())

pytestmark = needs(TASKS)


def test_all_real_task_folders_are_found() -> None:
    for name, (count, *_) in SETS.items():
        assert len([p for p in FOLDERS if p.parent.name == name]) == count
    assert all(is_terminal_bench(p) for p in FOLDERS)
    assert not is_terminal_bench(TASKS)
    assert len({p.name for p in FOLDERS}) == len(FOLDERS) == 63  # ids are unique


@pytest.mark.parametrize("path", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_task_loads(path: Path) -> None:
    _, category, test_timeout, agent_timeout = SETS[path.parent.name]
    task = load_terminal_bench(path)
    assert task.id == path.name
    assert task.source == "terminal-bench"
    assert task.path == path
    meta = yaml.safe_load((path / "task.yaml").read_text())
    assert task.instruction == meta["instruction"] and len(task.instruction.strip()) > 50
    assert task.environment.dockerfile == path / "Dockerfile"
    assert task.environment.context == path
    assert task.agent_timeout == agent_timeout
    verifier = task.verifier
    assert verifier.timeout == test_timeout == meta["max_test_timeout_sec"]
    assert verifier.command == "bash /tests/run-tests.sh"
    assert verifier.env == {"TEST_DIR": "/tests"}
    assert verifier.parser == "pytest"
    assert verifier.files == {
        "/tests/run-tests.sh": path / "run-tests.sh",
        "/tests": path / "tests",
    }
    assert (path / "tests").is_dir() and any((path / "tests").rglob("*test*.py"))
    assert task.solution is not None
    assert task.solution.script == (path / "solution.sh").read_text()
    assert task.solution.script.strip()
    assert task.metadata.category == category
    assert task.metadata.difficulty == meta["difficulty"]
    assert task.network == "none"


@pytest.fixture
def task_copy(tmp_path: Path) -> Path:
    """A writable copy of one real task folder (the originals are read-only)."""
    dest = tmp_path / "copied-task"
    shutil.copytree(TASKS / "evoeval" / "0", dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    assert load_terminal_bench(dest).id == "copied-task"
    return dest


def _error(path: Path) -> TaskError:
    with pytest.raises(TaskError) as err:
        load_terminal_bench(path)
    assert err.value.task_id == path.name
    assert err.value.reason == "invalid-task"
    assert str(err.value).startswith(f"{path.name}: ")
    return err.value


def _edit_yaml(path: Path, **changes: object) -> None:
    meta = yaml.safe_load((path / "task.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (path / "task.yaml").write_text(yaml.safe_dump(meta))


def test_no_instruction(task_copy: Path) -> None:
    _edit_yaml(task_copy, instruction=None)
    error = _error(task_copy)
    assert f"{task_copy / 'task.yaml'} has no `instruction`" in str(error)


def test_blank_instruction(task_copy: Path) -> None:
    _edit_yaml(task_copy, instruction="   \n")
    assert "task.yaml has no `instruction`" in str(_error(task_copy))


def test_old_descriptions_format_loads(task_copy: Path) -> None:
    _edit_yaml(
        task_copy,
        instruction=None,
        descriptions=[
            {"key": "hard", "description": "not this one"},
            {"key": "base", "description": "Write solution.py."},
        ],
    )
    assert load_terminal_bench(task_copy).instruction == "Write solution.py."


@pytest.mark.parametrize("name", ["Dockerfile", "run-tests.sh", "task.yaml"])
def test_missing_file(task_copy: Path, name: str) -> None:
    (task_copy / name).unlink()
    assert f"{task_copy / name} is missing" in str(_error(task_copy))


def test_invalid_yaml(task_copy: Path) -> None:
    (task_copy / "task.yaml").write_text("instruction: [unclosed\n  - x: : y\n")
    error = _error(task_copy)
    assert f"{task_copy / 'task.yaml'} is not valid YAML" in str(error)


def test_yaml_that_is_not_a_mapping(task_copy: Path) -> None:
    (task_copy / "task.yaml").write_text("- just\n- a list\n")
    assert "task.yaml must be a mapping" in str(_error(task_copy))


def test_optional_parts_and_defaults(task_copy: Path) -> None:
    (task_copy / "solution.sh").unlink()
    shutil.rmtree(task_copy / "tests")
    _edit_yaml(task_copy, max_test_timeout_sec=None, max_agent_timeout_sec=None, parser_name="x")
    task = load_terminal_bench(task_copy)
    assert task.solution is None
    assert task.verifier.files == {"/tests/run-tests.sh": task_copy / "run-tests.sh"}
    assert task.verifier.timeout == 120.0 and task.agent_timeout == 600.0
    assert task.verifier.parser == "exit_code"
