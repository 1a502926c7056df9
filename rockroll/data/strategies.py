"""Explore: strategies that draft tasks from a project, each a plug-in with a name.

A strategy yields `Draft`s: one changed file each (the bug, the removed body), with the text it
had, so the reference solution is putting it back. After the draft's tests have been run
against it, the strategy writes the instruction from what failed. Instructions here come from
templates (the failing tests' names and messages) and never contain the fix; the review's leak
gate checks that, whoever wrote them.

- `bug-injection`: one AST mutation (`rockroll.data.mutations`) of a function some passing test
  calls; functions are taken in turn, one mutation each per round, so a limited run spreads over
  the code instead of exhausting its first function.
- `feature-removal`: a covered function with a docstring has its body replaced by
  `raise NotImplementedError`; the task is to implement it again from the docstring and callers.

The registry of strategies by name is `rockroll.data.explore`.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from rockroll.data.mutations import apply, find_mutations, function_defs
from rockroll.data.project import Project

MAX_MESSAGE = 160
MAX_LISTED = 8


@dataclass(frozen=True)
class Draft:
    """A candidate task: `path` (relative to the project) changed from `original` to `changed`
    in `function`; `detail` is what changed, for the manifest (never for the agent)."""

    strategy: str
    path: str
    function: str
    line: int
    detail: str
    original: str
    changed: str
    docstring: str = ""  # what the instruction may quote: a docstring, a commit message
    focus: tuple[str, ...] = ()  # test files the fail-to-pass tests come from (all: empty)
    key: str = ""  # what names the draft when `changed` is only known later (a model's)

    @property
    def id(self) -> str:
        text = f"{self.strategy}\0{self.path}\0{self.key or self.changed}"
        return hashlib.sha256(text.encode()).hexdigest()[:10]


class Strategy(Protocol):
    """A strategy may also have `needs_model = True` and `with_model(model)` (the registry
    hands it the configured model), and `realize(draft) -> Draft | str` (the pipeline's worker
    calls it to make a planned draft's change, or learn the reason it cannot be made)."""

    name: str

    def drafts(self, project: Project, covered: set[tuple[str, str]]) -> Iterator[Draft]:
        """Drafts over the project's code; `covered`: (file, function) pairs a passing test
        calls."""
        ...

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        """What the agent is told, given the failing tests and their messages."""
        ...


class BugInjection:
    name = "bug-injection"

    def drafts(self, project: Project, covered: set[tuple[str, str]]) -> Iterator[Draft]:
        queues = []
        for path, source, wanted in covered_sources(project, covered):
            by_function: dict[str, list] = {}
            for m in find_mutations(source, path, wanted):
                by_function.setdefault(m.function, []).append(m)
            queues += [(source, ms) for ms in by_function.values()]
        for round_ in range(max((len(ms) for _, ms in queues), default=0)):
            for source, ms in queues:
                if round_ < len(ms):
                    m = ms[round_]
                    yield Draft(
                        self.name,
                        m.path,
                        m.function,
                        m.line,
                        m.describe(),
                        source,
                        apply(source, m),
                    )

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        return (
            f"# Fix a bug in {project.name}\n\n"
            f"Some of {project.name}'s own tests fail: the code they test has a bug. Find it in "
            f"the project's source, under `/app`, and fix it, so that these tests pass again "
            f"and the others still do:\n\n{listing(failing)}\n\n"
            "The tests are right; they are restored as they were before your work is checked.\n"
        )


class FeatureRemoval:
    name = "feature-removal"

    def drafts(self, project: Project, covered: set[tuple[str, str]]) -> Iterator[Draft]:
        for path, source, wanted in covered_sources(project, covered):
            for name, node in _documented(ast.parse(source), wanted):
                changed = _without_body(source, node)
                if changed is not None:
                    doc = ast.get_docstring(node) or ""
                    detail = f"feature-removal of {name} ({path}:{node.lineno})"
                    yield Draft(self.name, path, name, node.lineno, detail, source, changed, doc)

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        doc = "\n".join(f"    {line}" for line in draft.docstring.splitlines())
        return (
            f"# Implement `{draft.function}` in {project.name}\n\n"
            f"`{draft.function}` in `/app/{draft.path}` has lost its implementation: it only "
            f"raises NotImplementedError. Write it again, as its docstring says:\n\n{doc}\n\n"
            f"These tests of the project call it and fail now; they must pass, and the others "
            f"still:\n\n{listing(failing)}\n\n"
            "The tests are right; they are restored as they were before your work is checked.\n"
        )


def covered_sources(
    project: Project, covered: set[tuple[str, str]]
) -> Iterator[tuple[str, str, set[str]]]:
    """Each code file with covered functions: its path, its source, those functions' names."""
    for path in project.code:
        wanted = {name for file, name in covered if file == path}
        source = read_source(project, path) if wanted else None
        if source is not None:
            yield path, source, wanted


def read_source(project: Project, path: str) -> str | None:
    try:
        source = (project.root / path).read_text()
        ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    return source


def listing(failing: dict[str, str]) -> str:
    """The failing tests as a Markdown list, each with its message (a few, then a count)."""
    lines = []
    for test in sorted(failing)[:MAX_LISTED]:
        message = " ".join(failing[test].split())[:MAX_MESSAGE]
        lines.append(f"- `{test}`" + (f": {message}" if message else ""))
    if len(failing) > MAX_LISTED:
        lines.append(f"- and {len(failing) - MAX_LISTED} more")
    return "\n".join(lines)


def _documented(tree: ast.Module, wanted: set[str]) -> Iterator[tuple[str, ast.AST]]:
    for name, node in function_defs(tree):
        if name in wanted and ast.get_docstring(node) and len(node.body) > 2:
            yield name, node


def _without_body(source: str, node: ast.FunctionDef) -> str | None:
    """The source with the function's statements after its docstring replaced by a raise."""
    first, last = node.body[1], node.body[-1]
    if first.lineno == node.body[0].end_lineno or last.end_lineno is None:
        return None  # a docstring and code on one line: no clean cut
    lines = source.splitlines(keepends=True)
    indent = lines[first.lineno - 1][: first.col_offset]
    if indent.strip():
        return None
    body = [f"{indent}raise NotImplementedError\n"]
    return "".join(lines[: first.lineno - 1] + body + lines[last.end_lineno :])
