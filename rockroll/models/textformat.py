"""Plain-text action formats for models without native tool calling.

Two formats, as pure functions so the loop, the trainer and tests share one parser:

- "tool_call" (Hermes/Qwen): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks;
- "bash" (mini-swe-agent's text mode): exactly one fenced ```bash block per reply.

Parse errors come back as strings written for the model, so the loop can send them as feedback.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any, Final

from rockroll.models.messages import ToolCall

FORMATS: Final = ("tool_call", "bash")

# Returned by `parse_bash_block` as the command when the model asks to submit; never run it.
SUBMIT: Final = "__SUBMIT__"
SUBMIT_COMMANDS: Final = frozenset({"submit", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"})

_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"
_DECODER = json.JSONDecoder()
_BASH_BLOCK = re.compile(r"```(?:bash|sh)[ \t]*\r?\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_BASH_OPEN = re.compile(r"```(?:bash|sh)[ \t]*\r?\n")


def parse_tool_calls(text: str) -> tuple[list[ToolCall], list[str]]:
    """Every `<tool_call>` block in `text`, and an error string for each block that is broken.

    The JSON is decoded from just after the opening tag, so `</tool_call>` or braces inside JSON
    strings do not confuse it. A missing closing tag is accepted at the very end of the text,
    since generation often stops on it. Ids are call_N where N is the block's position, so they
    match the numbers in the error strings.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    pos = 0
    n = 0
    while (start := text.find(_OPEN, pos)) != -1:
        n += 1
        body = start + len(_OPEN)
        close = text.find(_CLOSE, body)
        next_pos = len(text) if close == -1 else close + len(_CLOSE)
        begin = _skip_ws(text, body)
        try:
            obj, end = _DECODER.raw_decode(text, begin)
        except json.JSONDecodeError as e:
            errors.append(f"tool call {n} is not valid JSON: {e.msg} (at char {e.pos - begin})")
            pos = next_pos
            continue
        after = _skip_ws(text, end)
        if text.startswith(_CLOSE, after):
            pos = after + len(_CLOSE)
        elif after == len(text):
            pos = after
        else:
            errors.append(
                f"tool call {n} has text after its JSON object (at char {after - begin}); "
                f"put exactly one JSON object between {_OPEN} and {_CLOSE}"
            )
            pos = next_pos
            continue
        call, error = _to_call(obj, n)
        if error:
            errors.append(error)
        else:
            calls.append(call)
    return calls, errors


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _to_call(obj: Any, n: int) -> tuple[ToolCall | None, str | None]:
    if not isinstance(obj, dict):
        return None, f'tool call {n} must be a JSON object with "name" and "arguments"'
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, f'tool call {n} has no "name": give the tool to call as a string'
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models double-encode the arguments
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args) if args.strip() else {}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None, f'tool call {n} ({name}): "arguments" must be a JSON object'
    return ToolCall(id=f"call_{n}", name=name.strip(), arguments=args), None


def render_tool_call(call: ToolCall) -> str:
    """A call as the model should have written it (the Qwen2.5 chat template's layout)."""
    payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{_OPEN}\n{payload}\n{_CLOSE}"


def parse_bash_block(text: str) -> tuple[str | None, str | None]:
    """(command, None) for a reply with exactly one ```bash (or ```sh) block, else (None, error).

    The closing fence must start a line, so backticks inside the command are kept. When the
    command is exactly one of SUBMIT_COMMANDS the command returned is the marker `SUBMIT`.
    """
    blocks = _BASH_BLOCK.findall(text)
    if not blocks and _BASH_OPEN.search(text):
        return None, "the ```bash block is not closed: end it with ``` on a line of its own"
    if not blocks:
        return None, (
            "no ```bash block found: reply with exactly one ```bash block containing the "
            "command to run"
        )
    if len(blocks) > 1:
        return None, (
            f"found {len(blocks)} ```bash blocks: reply with exactly one ```bash block "
            "containing the command to run (combine steps with && or a script)"
        )
    command = blocks[0].strip()
    if not command:
        return None, "the ```bash block is empty: put the command to run inside it"
    if command in SUBMIT_COMMANDS:
        return SUBMIT, None
    return command, None


def system_prompt_section(format: str, tools: list[dict]) -> str:
    """The system-prompt text that teaches a model the chosen format.

    `tools` are OpenAI function schemas ({"type": "function", "function": {...}} or the inner
    dict); the bash format ignores them since its only action is a shell command.
    """
    if format == "tool_call":
        return _tool_call_section(tools)
    if format == "bash":
        return _BASH_SECTION
    raise ValueError(f"unknown action format {format!r}; use one of {', '.join(FORMATS)}")


def _tool_call_section(tools: list[dict]) -> str:
    fns = [t.get("function", t) for t in tools]
    if not fns:
        raise ValueError("the tool_call format needs at least one tool to describe")
    listing = "\n\n".join(
        f"## {fn['name']}\n{fn.get('description', '').strip()}\n"
        f"Parameters (JSON schema): {json.dumps(fn.get('parameters', {}), ensure_ascii=False)}"
        for fn in fns
    )
    example = ToolCall(id="call_1", name=fns[0]["name"], arguments=_example_args(fns[0]))
    return (
        "# Tools\n\n"
        f"To use a tool, write a {_OPEN} block holding one JSON object with the tool's "
        '"name" and its "arguments", for example:\n\n'
        f"{render_tool_call(example)}\n\n"
        "The arguments must be valid JSON: escape quotes, backslashes and newlines inside "
        "strings. You may write several blocks in one reply; they run in order and you see "
        "every result in the next message. Reply without a tool call when you are done.\n\n"
        f"# Available tools\n\n{listing}"
    )


def _example_args(fn: dict) -> dict:
    props: dict = fn.get("parameters", {}).get("properties", {})
    names = fn.get("parameters", {}).get("required") or list(props)[:1]
    return {name: _example_value(props.get(name, {})) for name in names}


def _example_value(schema: dict) -> Any:
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    placeholders = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    return placeholders.get(schema.get("type"), "...")


_BASH_SECTION = """\
# How to act

Each reply must contain exactly one ```bash block with the shell command to run; explain your \
reasoning before it. You see the command's output in the next message. Chain related steps with \
&& and use scripts or heredocs for longer edits. Do not start interactive programs (editors, \
pagers, REPLs).

When you are done, reply with a block containing only `submit`.

Example reply:

THOUGHT: I should first see which files are in the repository.

```bash
ls -la
```"""
