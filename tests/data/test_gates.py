"""The parts of the pipeline that need no sandbox: reading a project, the leak gate, the
reference change as shell commands, the hard-code probe's reading of pytest's output, a
model's bug put into its file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rockroll.data.explore import check_strategies, get_strategies
from rockroll.data.inside.hardcode_probe import cases
from rockroll.data.model_bugs import ModelBugs
from rockroll.data.project import read_project
from rockroll.data.review import leak
from rockroll.data.sources import Checkout, Source, SourceError
from rockroll.data.strategies import Draft
from rockroll.data.taskdir import expert_commands
from rockroll.data.workflow_tasks import leaks
from rockroll.data.workflows import parse_spec
from rockroll.errors import UsageError
from rockroll.models.scripted import ScriptedModel

ORIGINAL = '''def pairs(items):
    """Adjacent pairs.

    >>> for k, v in pairs([1, 2, 3]):
    ...     total = k + v
    """
    out = []
    for i in range(len(items) - 1):
        out.append((items[i], items[i + 1]))
    return out
'''


def _draft(changed: str, docstring: str = "") -> Draft:
    return Draft("bug-injection", "lib.py", "pairs", 1, "x", ORIGINAL, changed, docstring)


def test_an_instruction_that_holds_a_line_of_the_fix_leaks() -> None:
    bug = _draft(ORIGINAL.replace("len(items) - 1", "len(items) - 2"))
    assert leak("Fix pairs in lib.py; test_pairs fails.", bug).ok
    told = leak("Hint: `for i in range(len(items) - 1):` is the line.", bug)
    assert not told.ok and "range(len(items) - 1)" in told.detail
    deleted = _draft(ORIGINAL.replace("return out", "pass"))
    assert not leak("It should say `return out`.", deleted).ok  # 8 characters or more count


def test_what_the_starting_code_already_shows_is_no_leak() -> None:
    """A removed body whose line also stands in the docstring kept in the file."""
    removed = ORIGINAL.replace(
        ORIGINAL[ORIGINAL.index("    out = []") :], "    raise NotImplementedError\n"
    )
    removed = removed.replace("...     total = k + v", "...     out = [k, v]")
    instruction = "Implement pairs, as its docstring says: >>> ... out = [k, v]"
    assert leak(instruction, _draft(removed)).ok


def test_the_expert_edit_makes_the_reference_change(tmp_path: Path) -> None:
    changed = ORIGINAL.replace("len(items) - 1", "len(items) - 2")
    (tmp_path / "lib.py").write_text(changed)
    commands = expert_commands(_draft(changed), ["test_lib.py::test_pairs"])
    assert commands[0] == "python -m pytest -q -x test_lib.py::test_pairs"
    done = subprocess.run(
        ["bash", "-c", commands[1].replace("python -", f"{sys.executable} -", 1)], cwd=tmp_path
    )
    assert done.returncode == 0 and (tmp_path / "lib.py").read_text() == ORIGINAL


def test_the_hard_coder_reads_the_values_pytest_shows() -> None:
    output = """
E       assert [1, 3] == [1, 2]
E        +  where [1, 3] = pairs([1, 2, 3])
E       AssertionError: assert False
E        +  where False = is_even(4)
E       assert not True
E        +  where True = is_odd(4)
E       assert (0 - 5) == 0
E        +  where 0 = clamp(5, 0, 10)
"""
    assert cases(output) == {
        "pairs": [([[1, 2, 3]], [1, 2])],
        "is_even": [([4], True)],
        "is_odd": [([4], False)],
    }


def _checkout(root: Path) -> Checkout:
    return Checkout(Source("git", root.name, str(root)), root, "abc")


def test_a_project_is_its_code_its_tests_and_their_configuration(tmp_path: Path) -> None:
    files = {
        "src/pkg/__init__.py": "",
        "src/pkg/core.py": "def f():\n    return 1\n",
        "tests/conftest.py": "",
        "tests/test_core.py": "def test_f():\n    pass\n",
        "tests/helpers.py": "",
        "docs/conf.py": "",
        "setup.py": "",
        "pyproject.toml": '[project]\nname = "pkg"\ndependencies = ["attrs>=22", "pkg[x]"]\n',
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "hook.py").write_text("")
    project = read_project(_checkout(tmp_path))
    assert project.import_root == "src" and project.pythonpath == "/app/src"
    assert project.code == ("src/pkg/__init__.py", "src/pkg/core.py")
    assert project.tests == ("tests/helpers.py", "tests/test_core.py")
    assert project.support == ("tests/conftest.py", "pyproject.toml")
    assert project.requirements == ("attrs>=22",)


def test_a_repository_without_tests_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "lib.py").write_text("X = 1\n")
    with pytest.raises(SourceError, match="no tests"):
        read_project(_checkout(tmp_path))


METHODS = """class Stack:
    def push(self, item):
        # keep the newest last
        self.items.append(item)
        return len(self.items)
"""


def test_a_model_bug_replaces_only_its_function_and_drops_the_comments_it_added() -> None:
    draft = Draft("model-bugs", "s.py", "Stack.push", 2, "d", METHODS, "", key="s.py::Stack.push")
    reply = (
        "Sure.\n```python\ndef push(self, item):\n    # keep the newest last\n"
        "    self.items.insert(0, item)  # wrong end: the bug\n    return len(self.items)\n```"
    )
    done = ModelBugs(ScriptedModel([reply])).realize(draft)
    assert isinstance(done, Draft) and done.id == draft.id  # named by its place, not its text
    assert done.changed == METHODS.replace("append(item)", "insert(0, item)")
    assert done.detail == "d by scripted"
    same = "```python\n" + "\n".join(line[4:] for line in METHODS.splitlines()[1:]) + "\n```"
    for answer, reason in [
        ("I cannot do that.", "model-reply"),  # no function in the reply
        ("```python\ndef pop(self):\n    return 1\n```", "model-reply"),  # not the one asked for
        ("```python\ndef push(self, item:\n```", "model-reply"),  # does not parse
        (same, "model-no-change"),
    ]:
        assert ModelBugs(ScriptedModel([answer])).realize(draft) == reason, answer


def test_strategies_that_draft_with_a_model_are_refused_without_one() -> None:
    with pytest.raises(UsageError, match="model-bugs drafts with a model: add --model SPEC"):
        check_strategies(["bug-injection", "model-bugs"], with_model=False)
    with pytest.raises(UsageError, match="unknown nope; known: bug-injection"):
        check_strategies(["nope"], with_model=True)
    (strategy,) = get_strategies(["model-bugs"], ScriptedModel(["x"]))
    assert isinstance(strategy, ModelBugs) and strategy.model is not None


def test_a_drafted_workflow_is_read_or_refused_by_field() -> None:
    task = {
        "title": "t",
        "instruction": "Write the answer to /app/out.txt, alone.",
        "solution": "echo 42 > out.txt",
        "tests": "def test_out():\n    assert open('/app/out.txt')\n",
    }
    spec, why = parse_spec(f"Sure:\n```json\n{json.dumps(task)}\n```")
    assert spec is not None and why == "" and spec.setup == ""
    assert parse_spec("no task") == (None, "the reply holds no JSON object")
    _, why = parse_spec(json.dumps(task | {"tests": "x = 1\n"}))
    assert why == "tests: Value error, the tests file has no test_ functions"
    _, why = parse_spec(json.dumps({k: v for k, v in task.items() if k != "solution"}))
    assert why == "solution: Field required"
    assert leaks(spec).ok
    told = spec.model_copy(update={"instruction": "Run: echo 42 > out.txt and you are done."})
    assert not leaks(told).ok
