"""Procedural terminal tasks in real sandboxes: the oracle and the expert's commands pass, doing
nothing fails, instances are reproducible, and answers stay where the agent must look for them."""

from __future__ import annotations

import pytest

from rockroll.errors import TaskError
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite
from rockroll.tasks.terminal import (
    FAMILIES,
    Instance,
    check,
    expert_commands,
    load_terminal,
    select,
)
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import open_sandbox, task_image

NAMES = list(FAMILIES)


def _after(task: Task, commands: list[str]) -> tuple[bool, str]:
    """Each command run as its own turn (a fresh bash in the workdir), then the verdict."""
    with open_sandbox(task, task_image(task)) as sb:
        for command in commands:
            sb.exec(["bash", "-c", command], timeout=30)
        verdict = verify(task, sb)
    return verdict.passed, verdict.output_tail


@pytest.mark.parametrize("family", NAMES)
def test_oracle_passes_and_doing_nothing_fails(base_image: str, family: str) -> None:
    for task in load_terminal(family, seed=5, size=2):
        assert task.solution is not None
        with open_sandbox(task, task_image(task)) as sb:
            assert verify(task, sb).passed is False
            res = sb.exec(["bash", "-c", task.solution.script], timeout=30)
            verdict = verify(task, sb)
        assert verdict.passed, (task.id, res.output, verdict.output_tail)


@pytest.mark.parametrize("family", NAMES)
def test_expert_commands_one_per_turn_pass(base_image: str, family: str) -> None:
    task = load_terminal(family, seed=6, size=1)[0]
    commands = expert_commands(task)
    assert len(commands) >= 2
    passed, detail = _after(task, commands)
    assert passed, (task.id, detail)
    passed, _ = _after(task, commands[:1])  # looking alone changes nothing
    assert not passed


@pytest.mark.parametrize("family", NAMES)
def test_acting_on_another_instance_fails(base_image: str, family: str) -> None:
    """The action must use what the inspection showed: another instance's commands fail."""
    tasks = load_terminal(family, seed=7, size=30)
    secrets = [_instance(t).secret for t in tasks]
    other = next(t for t, s in zip(tasks, secrets, strict=True) if s != secrets[0])
    passed, _ = _after(tasks[0], expert_commands(other))
    assert not passed


def _instance(task: Task) -> Instance:
    args = task.verifier.args
    return FAMILIES[args["family"]].instance(args["seed"], args["index"])


@pytest.mark.parametrize(
    ("family", "shortcut"),
    [
        ("find-copy", "{} > found.txt"),
        ("find-move", "{} > found.txt"),
        ("count-lines", "{} > count.txt"),
        ("count-words", "{} > count.txt"),
        ("count-files", "ls box > count.txt"),
        ("note-mkdir", "mkdir note"),
    ],
)
def test_copying_the_look_command_into_a_file_fails(
    base_image: str, family: str, shortcut: str
) -> None:
    """One command that skips reading the result must not pass."""
    task = load_terminal(family, seed=8, size=1)[0]
    passed, _ = _after(task, [shortcut.format(expert_commands(task)[0])])
    assert not passed


def test_fix_families_refuse_an_edited_script(base_image: str) -> None:
    task = load_terminal("fix-file", seed=1, size=1)[0]
    passed, detail = _after(task, ["printf 'echo OK\\n' > run.sh"])
    assert not passed and "run.sh" in detail


@pytest.mark.parametrize("family", NAMES)
def test_same_seed_same_tasks_other_seed_differs(family: str) -> None:
    first = load_terminal(family, seed=11, size=6)
    assert [t.model_dump() for t in first] == [
        t.model_dump() for t in load_terminal(family, seed=11, size=6)
    ]
    other = load_terminal(family, seed=12, size=6)
    assert [t.files for t in other] != [t.files for t in first]
    assert len({str(t.files) for t in first}) > 1  # instances vary within a seed


# The expert's commands of instance 2 of seed 3, written out: what the files of that instance
# say to do (see test_the_answer_is_where_the_agent_must_look_and_nowhere_else).
SEED_3_INDEX_2 = {
    "note-mkdir": ["cat note.txt", "mkdir button"],
    "note-rename": ["cat note.txt", "mv data.txt silver.txt"],
    "note-touch": ["cat note.txt", "touch button.txt"],
    "fix-dir": ["sh run.sh", "mkdir rocket", "sh run.sh"],
    "fix-file": ["sh run.sh", "touch needle.txt", "sh run.sh"],
    "fix-config": ["sh run.sh", "echo planet > config.txt", "sh run.sh"],
    "fix-slow": ["sh run.sh", "mkdir river", "sh run.sh"],
    "find-copy": ["grep -l needle docs/*", "cp docs/feather.txt found.txt"],
    "find-delete": ["grep -l forest docs/*", "rm docs/candle.txt"],
    "find-move": ["grep -l saddle docs/*", "mv docs/engine.txt found.txt"],
    "count-lines": ["wc -l data.txt", "echo 9 > count.txt"],
    "count-files": ["ls box | wc -l", "echo 9 > count.txt"],
    "count-words": ["wc -w data.txt", "echo 11 > count.txt"],
}


def test_every_family_has_its_written_out_instance() -> None:
    assert sorted(SEED_3_INDEX_2) == sorted(NAMES)


@pytest.mark.parametrize("family", NAMES)
def test_task_shape(family: str) -> None:
    task = load_terminal(family, seed=3, size=3)[2]
    fam = FAMILIES[family]
    assert task.id == f"term/{family}/3/2"
    assert task.environment.image == "base" and task.environment.workdir == "/app"
    assert all(path.startswith("/app/") for path in task.files)
    assert task.verifier.kind == "python"
    assert task.verifier.function == "rockroll.tasks.terminal:check"
    assert task.verifier.args == {"family": family, "seed": 3, "index": 2}
    assert task.metadata.category == family
    assert task.metadata.model_dump()["kind"] == fam.kind
    assert task.metadata.model_dump()["split"] == fam.split
    assert task.solution is not None
    commands = SEED_3_INDEX_2[family]
    assert expert_commands(task) == commands
    assert task.solution.script == "cd /app\n" + "\n".join(commands) + "\n"


@pytest.mark.parametrize("family", NAMES)
def test_the_answer_is_where_the_agent_must_look_and_nowhere_else(family: str) -> None:
    counting = FAMILIES[family].kind == "count-then-write"
    for task in load_terminal(family, seed=2, size=20):
        secret = _instance(task).secret
        assert secret not in task.instruction, task.id
        assert secret in expert_commands(task)[1], task.id
        shown = " ".join([*task.files, *map(str, task.files.values())])
        # A count must be computed, so it is written nowhere; anything else is there to be read.
        assert (secret in shown) is not counting, (task.id, secret)
        if counting:  # and it is the count of what the files hold, counted here
            assert secret == str(_count(family, task)), task.id


def _count(family: str, task: Task) -> int:
    """What `wc -l data.txt`, `wc -w data.txt` or `ls box | wc -l` prints for the task's files."""
    if family == "count-files":
        return sum(path.startswith("/app/box/") for path in task.files)
    text = str(task.files["/app/data.txt"])
    return text.count("\n") if family == "count-lines" else len(text.split())


def test_every_kind_has_a_held_out_family() -> None:
    kinds = {f.kind for f in FAMILIES.values()}
    assert len(kinds) >= 2
    for kind in kinds:
        splits = [f.split for f in FAMILIES.values() if f.kind == kind]
        assert "heldout" in splits and splits.count("train") >= 2, kind


def test_select_and_suite_spec() -> None:
    assert select("note-mkdir") == ["note-mkdir"]
    assert select("fix-dir, note-mkdir,fix-dir") == ["fix-dir", "note-mkdir"]
    assert select("all") == NAMES
    assert set(select("heldout")) == {n for n, f in FAMILIES.items() if f.split == "heldout"}
    assert select("read-then-act") == ["note-mkdir", "note-rename", "note-touch"]
    tasks = load_suite("term:note-mkdir,fix-dir?seed=4&size=3")
    assert [t.id for t in tasks if isinstance(t, Task)] == [
        *(f"term/note-mkdir/4/{i}" for i in range(3)),
        *(f"term/fix-dir/4/{i}" for i in range(3)),
    ]
    assert len(load_suite("term:all?size=1")) == len(NAMES)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("term:no-such?seed=1", "unknown family 'no-such'; use one of note-mkdir"),
        ("term:note-mkdir?seed=1&colour=red", r"unknown option\(s\) \['colour'\]"),
        ("term:note-mkdir?seed=one", "seed and size must be integers"),
        ("term:?seed=1", "no family named"),
    ],
)
def test_bad_suite_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        load_suite(spec)


def test_unknown_family_in_loader_and_verifier() -> None:
    with pytest.raises(TaskError, match="unknown family"):
        load_terminal("nope", seed=0, size=1)
    with pytest.raises(TaskError, match="unknown family"):
        check(None, {"family": "nope", "seed": 0, "index": 0})  # type: ignore[arg-type]
