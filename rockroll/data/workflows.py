"""`terminal-workflows`: shell tasks a model drafts, where `--model` names one (TermiGen's).

A brief says what to draft: a seed description (each `*.md` of a seeds folder), or, for a
repository, one of the kinds below with the repository's files and README. The model answers
with a whole task as one JSON object (`WorkflowSpec`): the instruction, a `setup` script that
makes the starting state when the image is built, the reference `solution`, and `tests`, a
pytest file that checks the final state. The Builder (`rockroll.data.workflow_tasks`) writes
it as a Harbor folder and has it checked; what fails (the build, the oracle) goes back to the
model with the log, for a corrected task.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from rockroll.data.project import Project
from rockroll.models.base import Model
from rockroll.models.messages import Message

KINDS = {
    "build": "build, package or run one of the project's tools, and leave a named artefact "
    "(a wheel, a generated file, a report) that the tests check",
    "debug": "the setup breaks one of the project's commands (a wrong setting, a missing or "
    "corrupted file, a bad environment variable); the agent finds why it fails and makes it work",
    "extract": "data extraction: the setup writes data files (logs, CSV, JSON) under /app/data; "
    "the agent computes a named result from them into a named file",
}
SYSTEM = """You design terminal tasks that train software agents. A task has:
- "title": one line;
- "instruction": Markdown for the agent: the goal, and every path, name and format the tests
  rely on; never the commands of the solution;
- "setup": a bash script run once as root in /app when the image is built (the network is
  there then, not later): it makes the starting state;
- "solution": a bash script, run as root in /app from the starting state, that does the task;
- "tests": a pytest file that checks the final state (files, their contents, a command's
  output) and fails in the starting state. It runs offline, after the agent, with /app as the
  working directory; plain test functions, no fixtures of your own, no parametrize.
Reply with the task as one JSON object in a ```json block, and nothing else."""
MAX_README = 1500
MAX_FILES = 60
_BLOCK = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.S)


class WorkflowSpec(BaseModel):
    """A task as the model drafts it."""

    title: str = Field(min_length=1, max_length=200)
    instruction: str = Field(min_length=20)
    setup: str = ""
    solution: str = Field(min_length=1)
    tests: str = Field(min_length=1)

    @field_validator("tests")
    @classmethod
    def _has_tests(cls, text: str) -> str:
        try:
            tree = ast.parse(text)
        except SyntaxError as exc:
            raise ValueError(f"the tests are not Python: {exc}") from None
        if not test_names(tree):
            raise ValueError("the tests file has no test_ functions")
        return text


def test_names(tree: ast.Module) -> list[str]:
    """The pytest ids of a test file's tests, relative to its folder."""
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and _test(n.name)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")):
        names += [
            f"{cls.name}::{m.name}"
            for m in cls.body
            if isinstance(m, ast.FunctionDef) and _test(m.name)
        ]
    return names


def _test(name: str) -> bool:
    return name.startswith("test")


@dataclass(frozen=True)
class Brief:
    """What one workflow task is drafted from."""

    kind: str  # "seed" or one of KINDS
    name: str  # the seed file, or the kind
    text: str

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.name}\0{self.text}".encode()).hexdigest()[:10]


def seed_briefs(folder: Path) -> Iterator[Brief]:
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(errors="replace").strip()
        if text:
            yield Brief("seed", path.name, f"Draft a task from this description:\n\n{text}")


def repo_briefs(project: Project) -> Iterator[Brief]:
    files = "\n".join(f"- {f}" for f in [*project.code, *project.tests][:MAX_FILES])
    readme = next((p for p in sorted(project.root.glob("README*")) if p.is_file()), None)
    about = readme.read_text(errors="replace")[:MAX_README] if readme else "(no README)"
    for kind, what in KINDS.items():
        yield Brief(
            kind,
            kind,
            f"The repository {project.name} {project.version} is checked out in /app, with its "
            f"dependencies and pytest installed.\n\nSome of its files:\n{files}\n\n"
            f"Its README begins:\n\n{about}\n\nDraft a task of this kind: {what}.",
        )


class TerminalWorkflows:
    name = "terminal-workflows"
    needs_model = True
    workflows = True  # whole tasks, not a changed file: the pipeline builds them apart

    def __init__(self, model: Model | None = None) -> None:
        self.model = model

    def with_model(self, model: Model) -> TerminalWorkflows:
        return TerminalWorkflows(model)

    def draft(self, brief: Brief, history: list[Message]) -> tuple[WorkflowSpec | None, str]:
        """The model's task for the brief, continuing `history` (the earlier drafts and what
        was wrong with them, which this call extends); (None, why) when the reply is not one."""
        if self.model is None:
            return None, "no model"
        if not history:
            history += [
                Message(role="system", content=SYSTEM),
                Message(role="user", content=brief.text),
            ]
        reply = self.model.complete(history, None, max_tokens=2000)
        text = reply.message.content or ""
        history.append(Message(role="assistant", content=text))
        return parse_spec(text)


def parse_spec(reply: str) -> tuple[WorkflowSpec | None, str]:
    for block in [*_BLOCK.findall(reply), reply]:
        try:
            return WorkflowSpec.model_validate(json.loads(block)), ""
        except json.JSONDecodeError:
            continue
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "the object"
            return None, f"{field}: {first['msg']}"
    return None, "the reply holds no JSON object"
