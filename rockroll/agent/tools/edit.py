"""`edit`: replace a snippet of a file, tolerant of the model's whitespace slips, and saying
where the nearest text is when the snippet is not there."""

from __future__ import annotations

import difflib
import re

from rockroll.agent.tools.base import (
    Tool,
    ToolContext,
    ToolResult,
    arguments,
    fail,
    numbered,
    text_arg,
)
from rockroll.agent.tools.files import read_text
from rockroll.errors import SandboxError


def _norm(line: str) -> str:
    return re.sub(r"\s+", " ", line.strip())


def _lines(text: str) -> list[str]:
    """Lines of a snippet; a final newline does not make an extra empty line."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


class Edit(Tool):
    name = "edit"
    description = (
        "Replace old_string with new_string in a file. old_string must match the file exactly "
        "(copy it from read_file, without the line numbers) and occur once; include surrounding "
        "lines to make it unique, or set replace_all to change every occurrence."
    )
    parameters = arguments(
        {
            "path": text_arg("file path, absolute or relative to the working directory"),
            "old_string": text_arg("the exact text to replace"),
            "new_string": text_arg("the text to put in its place"),
            "replace_all": {
                "type": "boolean",
                "description": "replace every occurrence (default false)",
            },
        },
        ["path", "old_string", "new_string"],
    )
    read_only = False

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        old, new = args["old_string"], args["new_string"]
        if not old:
            return fail("old_string is empty; to create or overwrite a file use write_file")
        if old == new:
            return fail("old_string and new_string are the same; nothing to change")
        got = read_text(ctx, args["path"])
        if isinstance(got, ToolResult):
            return got
        path, text = got
        count = text.count(old)
        if count > 1 and not args.get("replace_all", False):
            where = ", ".join(str(n) for n in _match_lines(text, old)[:10])
            return fail(
                f"old_string occurs {count} times in {path} (at lines {where}); include more "
                "surrounding lines to make it unique, or set replace_all to replace every one"
            )
        note = ""
        if count:
            updated = text.replace(old, new)
            at = text.find(old)
            first = text.count("\n", 0, at) + 1
        else:
            applied = _tolerant_replace(text, old, new)
            if isinstance(applied, str):
                return fail(f"old_string was not found in {path}. {applied}")
            updated, first = applied
            count = 1
            note = " (applied with whitespace-tolerant matching)"
        try:
            ctx.sandbox.write_bytes(path, updated.encode())
        except (OSError, SandboxError) as exc:
            return fail(f"cannot write {path}: {exc}")
        ctx.read_files.add(path)
        plural = "s" if count > 1 else ""
        out = f"replaced {count} occurrence{plural} in {path}{note}\n"
        out += _snippet(updated, first, len(_lines(new)))
        return ToolResult(output=out, meta={"path": path, "replacements": count})


def _match_lines(text: str, old: str) -> list[int]:
    lines, at = [], text.find(old)
    while at >= 0:
        lines.append(text.count("\n", 0, at) + 1)
        at = text.find(old, at + len(old))
    return lines


def _snippet(text: str, first: int, count: int, context: int = 2) -> str:
    """The edited lines with a little context, so the model can check the result."""
    lines = text.split("\n")
    lo = max(1, first - context)
    hi = min(len(lines), first + max(count, 1) - 1 + context, lo + 40)
    return numbered(lines[lo - 1 : hi], lo)


def _tolerant_replace(text: str, old: str, new: str) -> tuple[str, int] | str:
    """(new text, first changed line) when `old` matches one place up to whitespace.

    Models often get indentation or spacing slightly wrong; when the lines match once
    ignoring that, `new` is re-indented the way `old` maps onto the file, and applied.
    Otherwise the hint (a string) shows the nearest text, so the next try can copy it exactly.
    """
    file_lines = text.split("\n")
    old_lines = _lines(old)
    want = [_norm(x) for x in old_lines]
    n = len(old_lines)
    if any(want):
        hits = [
            i
            for i in range(len(file_lines) - n + 1)
            if [_norm(x) for x in file_lines[i : i + n]] == want
        ]
        if len(hits) > 1:
            where = ", ".join(str(i + 1) for i in hits[:10])
            return (
                f"Ignoring whitespace it matches {len(hits)} places (lines {where}); copy the "
                "exact text from read_file and include more surrounding lines"
            )
        if len(hits) == 1:
            i = hits[0]
            pairs = zip(old_lines, file_lines[i : i + n], strict=True)
            indents: dict[str, str] = {}
            for said, real in pairs:
                if said.strip():
                    indents.setdefault(_indent(said), _indent(real))
            new_lines = [_reindent(x, indents) for x in _lines(new)]
            if new == "":
                new_lines = []
            return "\n".join(file_lines[:i] + new_lines + file_lines[i + n :]), i + 1
    return _nearest_hint(file_lines, old)


def _reindent(line: str, indents: dict[str, str]) -> str:
    """Give `line` the file's indentation where the model's old_string had another one."""
    if not line.strip():
        return line
    have = _indent(line)
    key = max((k for k in indents if have.startswith(k)), key=len, default=None)
    return line if key is None else indents[key] + line[len(key) :]


def _nearest_hint(file_lines: list[str], old: str) -> str:
    n = len(_lines(old))
    best, best_at = 0.0, -1
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(old)
    for i in range(max(1, len(file_lines) - n + 1)):
        matcher.set_seq1("\n".join(file_lines[i : i + n]))
        if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
            continue
        ratio = matcher.ratio()
        if ratio > best:
            best, best_at = ratio, i
    if best_at < 0 or best < 0.5:
        return "No similar text either; read the file (read_file) and copy the exact text."
    window = file_lines[best_at : best_at + n]
    return (
        f"The nearest text is at lines {best_at + 1}-{best_at + len(window)} "
        f"({best:.0%} similar):\n{numbered(window, best_at + 1)}\n"
        "Copy the exact text (without the line numbers) into old_string and retry."
    )
