"""`glob`, `grep` and `list_dir`: finding files and text in the sandbox."""

from __future__ import annotations

import re

from rockroll.agent.tools.base import (
    Tool,
    ToolContext,
    ToolResult,
    arguments,
    fail,
    text_arg,
    truncate,
)
from rockroll.errors import SandboxError

GLOB_CAP = 500
LIST_CAP = 500
GREP_LINE_CAP = 300


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob with `**` (any number of directories) as a regex over relative paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (close := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : close]
            out.append("[^" + body[1:] + "]" if body[0] in "!^" else "[" + body + "]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class Glob(Tool):
    name = "glob"
    description = (
        "Find files whose path matches a glob pattern, e.g. `**/*.py` or `src/**/test_*.py`. "
        "A pattern without `/` matches file names at any depth. Returns sorted paths; .git is "
        "skipped."
    )
    parameters = arguments(
        {
            "pattern": text_arg("glob pattern, relative to path"),
            "path": text_arg("directory to search (default: the working directory)"),
        },
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        pattern = args["pattern"].removeprefix("./")
        try:
            base = ctx.path(args.get("path") or ".")
        except SandboxError as exc:
            return fail(str(exc))
        if not ctx.sandbox.exists(base):
            return fail(f"directory not found: {base}")
        if not ctx.sandbox.exec(["test", "-d", base]).ok:
            return fail(f"{base} is a file, not a directory; give the directory to search")
        argv = ["find", ".", "-name", ".git", "-prune", "-o", "!", "-type", "d", "-print"]
        try:
            res = ctx.sandbox.exec(argv, cwd=base, timeout=ctx.command_timeout)
        except SandboxError as exc:
            return fail(f"cannot search {base}: {exc}")
        if res.exit_code != 0 and not res.stdout:
            return fail(f"glob failed in {base}: {res.stderr.strip()}")
        regex = _glob_regex(pattern)
        by_name = "/" not in pattern
        found = sorted(
            rel
            for rel in (line.removeprefix("./") for line in res.stdout.splitlines())
            if regex.match(rel.rsplit("/", 1)[-1] if by_name else rel)
        )
        if not found:
            return ToolResult(output=f"no files match {pattern!r} in {base}", meta={"count": 0})
        prefix = base.rstrip("/") + "/"
        lines = [prefix + rel for rel in found[:GLOB_CAP]]
        if len(found) > GLOB_CAP:
            lines.append(f"[{len(found)} files match; showing the first {GLOB_CAP}]")
        if res.truncated or res.timed_out:
            lines.append("[the directory is too large to list completely; narrow the path]")
        return ToolResult(output="\n".join(lines), meta={"count": len(found)})


class Grep(Tool):
    name = "grep"
    description = (
        "Search file contents with an extended regular expression (grep -rnE); prints "
        "path:line:text for each matching line. Binary files and .git are skipped."
    )
    parameters = arguments(
        {
            "pattern": text_arg("extended regular expression (POSIX ERE)"),
            "path": text_arg("file or directory to search (default: the working directory)"),
            "include": text_arg("only files whose name matches this glob, e.g. `*.py`"),
        },
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        try:
            target = ctx.path(args.get("path") or ".")
        except SandboxError as exc:
            return fail(str(exc))
        if not ctx.sandbox.exists(target):
            return fail(f"path not found: {target}")
        argv = ["grep", "-rnEIH", "--exclude-dir=.git"]
        if args.get("include"):
            argv.append(f"--include={args['include']}")
        argv += ["-e", args["pattern"], "--", target]
        res = ctx.sandbox.exec(argv, timeout=ctx.command_timeout)
        if res.timed_out:
            return fail(f"grep timed out after {ctx.command_timeout:g} s; narrow the path")
        if res.exit_code == 1:
            return ToolResult(output=f"no matches for {args['pattern']!r} in {target}")
        if res.exit_code > 1 and not res.stdout:
            return fail(f"grep failed: {res.stderr.strip()}")
        lines = res.stdout.splitlines()
        shown = [x if len(x) <= 500 else x[:500] + " [... line cut]" for x in lines[:GREP_LINE_CAP]]
        out = truncate("\n".join(shown), ctx.max_output)
        if len(lines) > GREP_LINE_CAP or res.truncated:
            more = "at least " if res.truncated else ""
            out += (
                f"\n[{more}{len(lines)} matching lines; showing the first {len(shown)}: "
                "narrow the pattern, path or include]"
            )
        return ToolResult(output=out, meta={"matches": len(lines)})


def _size(n: int) -> str:
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in ("K", "M", "G"):
        value /= 1024
        if value < 1024 or unit == "G":
            break
    return f"{value:.1f}{unit}"


class ListDir(Tool):
    name = "list_dir"
    description = "List a directory: subdirectories end with `/`, files show their size."
    parameters = arguments(
        {"path": text_arg("directory (default: the working directory)")},
        [],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        raw = args.get("path") or "."
        try:
            path = ctx.path(raw)
            entries = ctx.sandbox.list_dir(path)
        except FileNotFoundError:
            return fail(f"directory not found: {ctx.shown(raw)}")
        except NotADirectoryError:
            return fail(f"{ctx.shown(raw)} is a file, not a directory; use read_file")
        except (OSError, SandboxError) as exc:
            return fail(f"cannot list {raw}: {exc}")
        if not entries:
            return ToolResult(output=f"[{path} is empty]", meta={"count": 0})
        lines = [
            f"{e.name}/" if e.is_dir else f"{e.name}  {_size(e.size)}" for e in entries[:LIST_CAP]
        ]
        if len(entries) > LIST_CAP:
            lines.append(f"[{len(entries)} entries; showing the first {LIST_CAP}]")
        return ToolResult(output=f"{path}:\n" + "\n".join(lines), meta={"count": len(entries)})
