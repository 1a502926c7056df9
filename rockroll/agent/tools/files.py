"""`read_file` and `write_file`, and `read_text`, the one way the file tools read a file."""

from __future__ import annotations

from rockroll.agent.tools.base import (
    Tool,
    ToolContext,
    ToolResult,
    arguments,
    fail,
    numbered,
    text_arg,
)
from rockroll.errors import SandboxError

LINE_CHARS = 2000
READ_LIMIT = 2000


def read_text(ctx: ToolContext, raw_path: str) -> tuple[str, str] | ToolResult:
    """(absolute path, text) of a text file, or the error the model should see."""
    try:
        path = ctx.path(raw_path)
        data = ctx.sandbox.read_bytes(path)
    except FileNotFoundError:
        return fail(f"file not found: {ctx.shown(raw_path)} (use glob or list_dir to find it)")
    except IsADirectoryError:
        return fail(f"{ctx.shown(raw_path)} is a directory; use list_dir to see its entries")
    except (OSError, SandboxError) as exc:
        return fail(f"cannot read {raw_path}: {exc}")
    if b"\0" in data[:8192]:
        return fail(f"{path} is a binary file ({len(data)} bytes); inspect it with bash")
    try:
        return path, data.decode()
    except UnicodeDecodeError:
        return fail(f"{path} is not UTF-8 text ({len(data)} bytes); inspect it with bash")


class ReadFile(Tool):
    name = "read_file"
    description = (
        "Read a text file with numbered lines (`   12\\tcode`; the number and tab are not part "
        "of the file). Reads up to 2000 lines; use offset and limit for more of a long file."
    )
    parameters = arguments(
        {
            "path": text_arg("file path, absolute or relative to the working directory"),
            "offset": {"type": "integer", "minimum": 1, "description": "first line (1-based)"},
            "limit": {"type": "integer", "minimum": 1, "description": "lines to read (2000)"},
        },
        ["path"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        got = read_text(ctx, args["path"])
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
            return fail(f"offset {start} is past the end of {path} ({total} lines)")
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
        out = numbered(shown, start)
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
    parameters = arguments(
        {
            "path": text_arg("file path, absolute or relative to the working directory"),
            "content": text_arg("the complete new content of the file"),
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
            return fail(f"{args['path']} is a directory; give a file path")
        except (OSError, SandboxError) as exc:
            return fail(f"cannot write {args['path']}: {exc}")
        return ToolResult(output=f"wrote {len(data)} bytes to {path}", meta={"path": path})
