"""`model-bugs`: bugs a model writes, where `--model` names one (SWE-smith's rewrites).

Each covered function of at least `MIN_STATEMENTS` statements is a plan, counted without the
model: the draft's id is its place (file, function), so a resumed run knows what it decided.
The model is asked only when a worker takes the plan up (`realize`): it sees the function and
rewrites it with one subtle bug, keeping its name, signature and docstring. Its reply is
refused, with the reason recorded, unless it holds one function of that name that parses and
differs from the original; comments it added are dropped (a `# bug here` would give the task
away) and the rest of the file stays byte for byte. Screening then decides, as for every
draft, whether the project's tests catch the bug.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from collections.abc import Iterator
from dataclasses import replace

from rockroll.data.mutations import function_defs
from rockroll.data.project import Project
from rockroll.data.strategies import BugInjection, Draft, covered_sources
from rockroll.models.base import Model
from rockroll.models.messages import Message

MIN_STATEMENTS = 2
MAX_FUNCTION_LINES = 120  # longer functions are not sent: the reply would be long and costly
SYSTEM = (
    "You help build a benchmark of bug-fixing tasks. Rewrite the Python function you are given "
    "with exactly one subtle, realistic bug, the kind a developer makes (a wrong bound, a "
    "missed case, a swapped argument, a wrong operator), that the project's tests would catch. "
    "Keep its name, signature and docstring, and add no comment that points at the bug. Reply "
    "with the whole rewritten function in one ```python block and nothing else."
)
_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


class ModelBugs:
    name = "model-bugs"
    needs_model = True

    def __init__(self, model: Model | None = None) -> None:
        self.model = model
        self._template = BugInjection()

    def with_model(self, model: Model) -> ModelBugs:
        return ModelBugs(model)

    def drafts(self, project: Project, covered: set[tuple[str, str]]) -> Iterator[Draft]:
        for path, source, wanted in covered_sources(project, covered):
            for name, node in function_defs(ast.parse(source)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                big = len(node.body) >= MIN_STATEMENTS and size <= MAX_FUNCTION_LINES
                if name in wanted and big:
                    detail = f"model-written bug in {name} ({path}:{node.lineno})"
                    key = f"{path}::{name}"
                    yield Draft(self.name, path, name, node.lineno, detail, source, "", key=key)

    def realize(self, draft: Draft) -> Draft | str:
        """The draft with the model's bug in it, or the reason the reply cannot be one."""
        if self.model is None:
            return "model-reply"
        tree = ast.parse(draft.original)
        node = dict(function_defs(tree)).get(draft.function)
        if node is None:
            return "model-reply"
        lines = draft.original.splitlines(keepends=True)
        start, end = node.lineno - 1, node.end_lineno or node.lineno
        text = textwrap.dedent("".join(lines[start:end]))
        prompt = f"File `{draft.path}`. The function `{draft.function}`:\n\n```python\n{text}```"
        reply = self.model.complete(
            [Message(role="system", content=SYSTEM), Message(role="user", content=prompt)],
            None,
            max_tokens=max(400, 3 * len(text) // 4 + 200),
        )
        rewritten = rewritten_function(reply.message.content or "", draft.function, text)
        if rewritten is None:
            return "model-reply"
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        body = textwrap.indent(rewritten, indent) if indent else rewritten
        changed = "".join(lines[:start]) + body + "".join(lines[end:])
        try:
            new = dict(function_defs(ast.parse(changed))).get(draft.function)
        except SyntaxError:
            return "model-reply"
        if new is None or ast.dump(new) == ast.dump(node):
            return "model-no-change"
        return replace(draft, changed=changed, detail=f"{draft.detail} by {self.model.name}")

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        return self._template.instruction(draft, project, failing)


def rewritten_function(reply: str, qualname: str, original: str) -> str | None:
    """The function named like `qualname` in the model's reply, without the comments the
    original does not have, as text ending in a newline; None when there is no such one."""
    blocks = _BLOCK.findall(reply) or [reply]
    name = qualname.rsplit(".", 1)[-1]
    for block in blocks:
        code = textwrap.dedent(block)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        found = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
        ]
        if len(found) == 1:
            node = found[0]
            lines = code.splitlines(keepends=True)
            text = "".join(lines[node.lineno - 1 : node.end_lineno])
            text = _without_new_comments(text, _comments(original))
            return text if text.endswith("\n") else text + "\n"
    return None


def _comments(code: str) -> set[str]:
    return {text for _, text, _ in _comment_tokens(code)}


def _comment_tokens(code: str) -> list[tuple[int, str, int]]:
    """(line, text, column) of each comment."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    return [(t.start[0], t.string, t.start[1]) for t in tokens if t.type == tokenize.COMMENT]


def _without_new_comments(code: str, keep: set[str]) -> str:
    lines = code.splitlines(keepends=True)
    drop: set[int] = set()
    for row, text, col in _comment_tokens(code):
        if text in keep:
            continue
        before = lines[row - 1][:col].rstrip()
        if before:
            lines[row - 1] = before + "\n"
        else:
            drop.add(row - 1)
    return "".join(line for i, line in enumerate(lines) if i not in drop)
