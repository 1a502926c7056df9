"""The tools an agent acts with inside a sandbox, each described by a JSON schema for the model.

Every tool answers with a `ToolResult` the model can read and act on: errors say what was wrong
and what to try instead, long outputs keep their head and tail, and nothing raises for a
mistake the model made. `run_tool` is the one entry point a loop needs: it validates the
arguments against the schema first, so a tool's `run` only ever sees well-typed arguments.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from rockroll.sandbox.errors import SandboxClosed, SandboxError
from rockroll.sandbox.files import sandbox_path
from rockroll.sandbox.sdk import Sandbox
from rockroll.sandbox.session import Session

TODO_STATUSES = ("pending", "in_progress", "done")
GLOB_CAP = 500
LIST_CAP = 500
GREP_LINE_CAP = 300
LINE_CHARS = 2000
READ_LIMIT = 2000


class ToolResult(BaseModel):
    """What a tool call produced; `output` is what the model sees next."""

    output: str
    error: bool = False
    done: bool = Field(False, description="the agent submitted: the episode ends")
    meta: dict = Field(default_factory=dict)


# -- policy ---------------------------------------------------------------------------------------
_SEGMENT_SPLIT = re.compile(r"\|\||&&|[;|&\n]")


@dataclass
class Policy:
    """Which shell commands the agent may run.

    Patterns are shell-style (`fnmatch`) and matched against the whole command and against each
    simple command in it (split at `;`, `&&`, `||`, `|`, `&`, newlines), so `true && curl x`
    does not slip past a `curl *` deny rule, and an allow rule `git *` does not approve
    `git status && rm -rf x`.
    """

    mode: Literal["yolo", "ask"] = "yolo"
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    ask: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("yolo", "ask"):
            raise ValueError(f"policy mode must be 'yolo' or 'ask', got {self.mode!r}")

    def check(self, command: str) -> str | None:
        """The reason `command` is refused, or None when it may run."""
        whole = command.strip()
        parts = _segments(whole)
        for pattern in self.deny:
            if any(fnmatch.fnmatchcase(p, pattern) for p in [whole, *parts]):
                return f"refused by the deny rule {pattern!r}"
        if self.mode == "yolo" or self._allowed(whole, parts):
            return None
        if self.ask is None:
            return "refused: ask mode, no allow rule matches and no one is there to approve it"
        if not self.ask(command):
            return "refused by the user (ask mode); try another way or ask why"
        return None

    def _allowed(self, whole: str, parts: list[str]) -> bool:
        # Command substitution can hide anything inside an allowed prefix: always ask.
        if "$(" in whole or "`" in whole or not parts:
            return False
        return all(any(fnmatch.fnmatchcase(p, pat) for pat in self.allow) for p in parts)

    @classmethod
    def load(cls, path: str | Path, ask: Callable[[str], bool] | None = None) -> Policy:
        """Rules saved by `save`; a missing file gives the default policy (first run)."""
        p = Path(path)
        if not p.exists():
            return cls(ask=ask)
        data = json.loads(p.read_text())
        return cls(
            mode=data.get("mode", "yolo"),
            allow=list(data.get("allow", [])),
            deny=list(data.get("deny", [])),
            ask=ask,
        )

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"mode": self.mode, "allow": self.allow, "deny": self.deny}
        p.write_text(json.dumps(data, indent=2) + "\n")


def _segments(command: str) -> list[str]:
    return [s.strip() for s in _SEGMENT_SPLIT.split(command) if s.strip()]


# -- context and base class -----------------------------------------------------------------------
@dataclass
class ToolContext:
    """The state tools share within one episode; `workdir` defaults to the sandbox's."""

    sandbox: Sandbox
    session: Session | None = None
    workdir: str = ""
    todo: list[dict] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    read_files: set[str] = field(default_factory=set)
    max_output: int = 16000
    command_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not self.workdir:
            self.workdir = self.sandbox.spec.workdir

    def path(self, path: str) -> str:
        """Absolute sandbox path of `path`, relative ones taken from `workdir`."""
        return sandbox_path(path, self.workdir)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class Tool(ABC):
    """One tool: its schema for the model and what it does."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict]
    read_only: ClassVar[bool] = True  # does not change the sandbox (safe to run in parallel)

    @abstractmethod
    def run(self, ctx: ToolContext, args: dict) -> ToolResult: ...

    def schema(self) -> dict:
        """The OpenAI `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _fail(text: str, **meta: Any) -> ToolResult:
    return ToolResult(output=text, error=True, meta=meta)


def _obj(properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _str(description: str) -> dict:
    return {"type": "string", "description": description}


def truncate(text: str, limit: int) -> str:
    """Head and tail of `text` within about `limit` characters: errors are usually at the end."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[-tail:]}"


# -- bash -----------------------------------------------------------------------------------------
class Bash(Tool):
    name = "bash"
    description = (
        "Run a bash command in a persistent shell: the working directory, exported variables "
        "and background jobs carry over to the next call. Output is stdout then stderr; long "
        "output keeps its head and tail. Interactive programs (editors, pagers, prompts) hang "
        "until the timeout: pass flags that make them non-interactive."
    )
    parameters = _obj(
        {
            "command": _str("the shell command to run"),
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "seconds before the command is killed (default 120)",
            },
        },
        ["command"],
    )
    read_only = False

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        command = args["command"]
        refusal = ctx.policy.check(command)
        if refusal:
            return _fail(f"{refusal}. The command was not run.", refused=True)
        timeout = float(args.get("timeout", ctx.command_timeout))
        note = ""
        if ctx.session is None:
            ctx.session = ctx.sandbox.session(cwd=ctx.workdir)
        try:
            res = ctx.session.run(command, timeout=timeout)
        except SandboxClosed:
            # The shell ended (`exit`, or killed at a timeout); the command never started.
            ctx.session.close()
            ctx.session = ctx.sandbox.session(cwd=ctx.workdir)
            note = (
                f"[the previous shell had exited; started a new one in {ctx.workdir} "
                "(directory, variables and background jobs were reset)]\n"
            )
            res = ctx.session.run(command, timeout=timeout)
        out = note + truncate(res.stdout + res.stderr, ctx.max_output)
        meta = {"exit_code": res.exit_code, "duration": res.duration, "timed_out": res.timed_out}
        if res.timed_out:
            out = _join(out, f"[timed out after {timeout:g} s; the command was killed]")
            return ToolResult(output=out, error=True, meta=meta)
        if res.exit_code != 0:
            out = _join(out, f"[exit code {res.exit_code}]")
        # A failing command is information for the model, not a harness error.
        return ToolResult(output=out or "(no output)", meta=meta)


def _join(text: str, note: str) -> str:
    if not text:
        return note
    return f"{text}{note}" if text.endswith("\n") else f"{text}\n{note}"


# -- files ----------------------------------------------------------------------------------------
def _read(ctx: ToolContext, raw_path: str) -> tuple[str, str] | ToolResult:
    """(absolute path, text) of a text file, or the error the model should see."""
    try:
        path = ctx.path(raw_path)
        data = ctx.sandbox.read_bytes(path)
    except FileNotFoundError:
        return _fail(f"file not found: {_shown(ctx, raw_path)} (use glob or list_dir to find it)")
    except IsADirectoryError:
        return _fail(f"{_shown(ctx, raw_path)} is a directory; use list_dir to see its entries")
    except (OSError, SandboxError) as exc:
        return _fail(f"cannot read {raw_path}: {exc}")
    if b"\0" in data[:8192]:
        return _fail(f"{path} is a binary file ({len(data)} bytes); inspect it with bash")
    try:
        return path, data.decode()
    except UnicodeDecodeError:
        return _fail(f"{path} is not UTF-8 text ({len(data)} bytes); inspect it with bash")


def _shown(ctx: ToolContext, raw_path: str) -> str:
    try:
        return ctx.path(raw_path)
    except SandboxError:
        return raw_path


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{n:5d}\t{line}" for n, line in enumerate(lines, first))


class ReadFile(Tool):
    name = "read_file"
    description = (
        "Read a text file with numbered lines (`   12\\tcode`; the number and tab are not part "
        "of the file). Reads up to 2000 lines; use offset and limit for more of a long file."
    )
    parameters = _obj(
        {
            "path": _str("file path, absolute or relative to the working directory"),
            "offset": {"type": "integer", "minimum": 1, "description": "first line (1-based)"},
            "limit": {"type": "integer", "minimum": 1, "description": "lines to read (2000)"},
        },
        ["path"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        got = _read(ctx, args["path"])
        if isinstance(got, ToolResult):
            return got
        path, text = got
        ctx.read_files.add(path)
        lines = text.splitlines()
        total = len(lines)
        if total == 0:
            return ToolResult(output=f"[{path} is empty]", meta={"path": path, "lines": 0})
        start = args.get("offset", 1)
        if start > total:
            return _fail(f"offset {start} is past the end of {path} ({total} lines)")
        end = min(total, start - 1 + args.get("limit", READ_LIMIT))
        shown: list[str] = []
        size = 0
        for i in range(start - 1, end):
            line = lines[i]
            if len(line) > LINE_CHARS:
                line = f"{line[:LINE_CHARS]} [... line cut at {LINE_CHARS} characters]"
            size += len(line) + 7
            if shown and size > ctx.max_output:
                break
            shown.append(line)
        last = start + len(shown) - 1
        out = _numbered(shown, start)
        if start > 1 or last < total:
            more = f"; continue with offset={last + 1}" if last < total else ""
            out += f"\n[file has {total} lines; showing {start}-{last}{more}]"
        return ToolResult(output=out, meta={"path": path, "lines": total})


class WriteFile(Tool):
    name = "write_file"
    description = (
        "Create or overwrite a file with the given content; parent directories are created. "
        "To change part of an existing file, prefer edit."
    )
    parameters = _obj(
        {
            "path": _str("file path, absolute or relative to the working directory"),
            "content": _str("the complete new content of the file"),
        },
        ["path", "content"],
    )
    read_only = False

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        data = args["content"].encode()
        try:
            path = ctx.path(args["path"])
            ctx.sandbox.write_bytes(path, data)
        except IsADirectoryError:
            return _fail(f"{args['path']} is a directory; give a file path")
        except (OSError, SandboxError) as exc:
            return _fail(f"cannot write {args['path']}: {exc}")
        return ToolResult(output=f"wrote {len(data)} bytes to {path}", meta={"path": path})


# -- edit -----------------------------------------------------------------------------------------
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
    parameters = _obj(
        {
            "path": _str("file path, absolute or relative to the working directory"),
            "old_string": _str("the exact text to replace"),
            "new_string": _str("the text to put in its place"),
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
            return _fail("old_string is empty; to create or overwrite a file use write_file")
        if old == new:
            return _fail("old_string and new_string are the same; nothing to change")
        got = _read(ctx, args["path"])
        if isinstance(got, ToolResult):
            return got
        path, text = got
        count = text.count(old)
        if count > 1 and not args.get("replace_all", False):
            where = ", ".join(str(n) for n in _match_lines(text, old)[:10])
            return _fail(
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
                return _fail(f"old_string was not found in {path}. {applied}")
            updated, first = applied
            count = 1
            note = " (applied with whitespace-tolerant matching)"
        try:
            ctx.sandbox.write_bytes(path, updated.encode())
        except (OSError, SandboxError) as exc:
            return _fail(f"cannot write {path}: {exc}")
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
    return _numbered(lines[lo - 1 : hi], lo)


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
        f"({best:.0%} similar):\n{_numbered(window, best_at + 1)}\n"
        "Copy the exact text (without the line numbers) into old_string and retry."
    )


# -- search ---------------------------------------------------------------------------------------
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
    parameters = _obj(
        {
            "pattern": _str("glob pattern, relative to path"),
            "path": _str("directory to search (default: the working directory)"),
        },
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        pattern = args["pattern"].removeprefix("./")
        try:
            base = ctx.path(args.get("path") or ".")
        except SandboxError as exc:
            return _fail(str(exc))
        if not ctx.sandbox.exists(base):
            return _fail(f"directory not found: {base}")
        if not ctx.sandbox.exec(["test", "-d", base]).ok:
            return _fail(f"{base} is a file, not a directory; give the directory to search")
        argv = ["find", ".", "-name", ".git", "-prune", "-o", "!", "-type", "d", "-print"]
        try:
            res = ctx.sandbox.exec(argv, cwd=base, timeout=ctx.command_timeout)
        except SandboxError as exc:
            return _fail(f"cannot search {base}: {exc}")
        if res.exit_code != 0 and not res.stdout:
            return _fail(f"glob failed in {base}: {res.stderr.strip()}")
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
    parameters = _obj(
        {
            "pattern": _str("extended regular expression (POSIX ERE)"),
            "path": _str("file or directory to search (default: the working directory)"),
            "include": _str("only files whose name matches this glob, e.g. `*.py`"),
        },
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        try:
            target = ctx.path(args.get("path") or ".")
        except SandboxError as exc:
            return _fail(str(exc))
        if not ctx.sandbox.exists(target):
            return _fail(f"path not found: {target}")
        argv = ["grep", "-rnEIH", "--exclude-dir=.git"]
        if args.get("include"):
            argv.append(f"--include={args['include']}")
        argv += ["-e", args["pattern"], "--", target]
        res = ctx.sandbox.exec(argv, timeout=ctx.command_timeout)
        if res.timed_out:
            return _fail(f"grep timed out after {ctx.command_timeout:g} s; narrow the path")
        if res.exit_code == 1:
            return ToolResult(output=f"no matches for {args['pattern']!r} in {target}")
        if res.exit_code > 1 and not res.stdout:
            return _fail(f"grep failed: {res.stderr.strip()}")
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
    parameters = _obj(
        {"path": _str("directory (default: the working directory)")},
        [],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        raw = args.get("path") or "."
        try:
            path = ctx.path(raw)
            entries = ctx.sandbox.list_dir(path)
        except FileNotFoundError:
            return _fail(f"directory not found: {_shown(ctx, raw)}")
        except NotADirectoryError:
            return _fail(f"{_shown(ctx, raw)} is a file, not a directory; use read_file")
        except (OSError, SandboxError) as exc:
            return _fail(f"cannot list {raw}: {exc}")
        if not entries:
            return ToolResult(output=f"[{path} is empty]", meta={"count": 0})
        lines = [
            f"{e.name}/" if e.is_dir else f"{e.name}  {_size(e.size)}" for e in entries[:LIST_CAP]
        ]
        if len(entries) > LIST_CAP:
            lines.append(f"[{len(entries)} entries; showing the first {LIST_CAP}]")
        return ToolResult(output=f"{path}:\n" + "\n".join(lines), meta={"count": len(entries)})


# -- plan and end ---------------------------------------------------------------------------------
_MARK = {"pending": "[ ]", "in_progress": "[~]", "done": "[x]"}


class Todo(Tool):
    name = "todo"
    description = (
        "Replace your plan with this list of steps. Keep one step in_progress at a time and "
        "mark steps done as you finish them; the whole list is sent every time."
    )
    parameters = _obj(
        {
            "items": {
                "type": "array",
                "description": "the complete plan, in order",
                "items": _obj(
                    {
                        "content": _str("what the step does"),
                        "status": {
                            "type": "string",
                            "enum": list(TODO_STATUSES),
                            "description": "pending, in_progress or done",
                        },
                    },
                    ["content", "status"],
                ),
            }
        },
        ["items"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        ctx.todo[:] = [
            {"id": i, "content": item["content"], "status": item["status"]}
            for i, item in enumerate(args["items"], 1)
        ]
        return ToolResult(output=render_todo(ctx.todo), meta={"items": len(ctx.todo)})


def render_todo(todo: list[dict]) -> str:
    if not todo:
        return "Plan cleared."
    done = sum(t["status"] == "done" for t in todo)
    lines = [f"Plan ({done}/{len(todo)} done):"]
    lines += [f"{_MARK[t['status']]} {t['id']}. {t['content']}" for t in todo]
    return "\n".join(lines)


class Submit(Tool):
    name = "submit"
    description = "Finish the task: call this once the work is complete and checked."
    parameters = _obj({"summary": _str("a short summary of what was done")}, [])

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        return ToolResult(output="submitted", done=True, meta={"summary": args.get("summary", "")})


# -- registry and validation ----------------------------------------------------------------------
def default_tools() -> list[Tool]:
    return [Bash(), ReadFile(), WriteFile(), Edit(), Glob(), Grep(), ListDir(), Todo(), Submit()]


def tools_by_name(tools: list[Tool]) -> dict[str, Tool]:
    out: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in out:
            raise ValueError(f"two tools are named {tool.name!r}")
        out[tool.name] = tool
    return out


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_NAMES |= {list: "array", dict: "object", type(None): "null"}


def validate(tool: Tool, args: object) -> str | None:
    """What is wrong with `args` for `tool`, said so the model can fix its call; None if fine.

    Covers the subset of JSON schema the tools use: type, properties, required,
    additionalProperties, items, enum, minimum and exclusiveMinimum.
    """
    if not isinstance(args, dict):
        return f"{tool.name}: the arguments must be a JSON object, got {_kind(args)}"
    problem = _check(tool.parameters, args, "")
    return f"{tool.name}: {problem}" if problem else None


def _kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _describe(schema: dict) -> str:
    text = f"({schema.get('type', 'any')})"
    return f"{text}: {schema['description']}" if "description" in schema else text


def _check(schema: dict, value: Any, where: str) -> str | None:
    label = f"argument '{where}'" if where else "the arguments"
    kind = schema.get("type")
    if kind and not _TYPES[kind](value):
        return f"{label} must be of type {kind}, got {_kind(value)} {json.dumps(value)[:80]}"
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(map(str, schema["enum"]))
        return f"{label} must be one of {choices}, got {json.dumps(value)[:80]}"
    if "minimum" in schema and value < schema["minimum"]:
        return f"{label} must be at least {schema['minimum']}, got {value}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{label} must be greater than {schema['exclusiveMinimum']}, got {value}"
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                full = f"{where}.{name}" if where else name
                return f"missing required argument '{full}' {_describe(props.get(name, {}))}"
        if schema.get("additionalProperties", True) is False:
            for name in value:
                if name not in props:
                    full = f"{where}.{name}" if where else name
                    known = ", ".join(props) or "none"
                    return f"unknown argument '{full}'; the arguments are: {known}"
        for name, sub in props.items():
            if name in value:
                problem = _check(sub, value[name], f"{where}.{name}" if where else name)
                if problem:
                    return problem
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            problem = _check(schema["items"], item, f"{where}[{i}]")
            if problem:
                return problem
    return None


def run_tool(tool: Tool, ctx: ToolContext, args: object) -> ToolResult:
    """Validate, then run: a malformed call or a sandbox failure becomes an error result."""
    problem = validate(tool, args)
    if problem:
        return _fail(problem, invalid=True)
    assert isinstance(args, dict)
    try:
        return tool.run(ctx, args)
    except (SandboxError, OSError) as exc:
        return _fail(f"{tool.name} failed: {exc}")
