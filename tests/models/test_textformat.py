"""Text action formats: <tool_call> blocks and fenced bash blocks."""

from __future__ import annotations

import json

import pytest

from rockroll.models.messages import ToolCall
from rockroll.models.textformat import (
    SUBMIT,
    parse_bash_block,
    parse_tool_calls,
    render_tool_call,
    system_prompt_section,
)

BASH_TOOL = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a shell command.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
            "required": ["command"],
        },
    },
}


def test_parse_single_call():
    text = (
        'Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>'
    )
    calls, errors = parse_tool_calls(text)
    assert errors == []
    assert calls == [ToolCall(id="call_1", name="bash", arguments={"command": "ls"})]


def test_parse_no_calls():
    assert parse_tool_calls("just talking, no tools") == ([], [])


def test_parse_multiple_calls_with_whitespace_variants():
    text = (
        '<tool_call>{"name":"a","arguments":{}}</tool_call> then '
        '<tool_call>\n\n  {"name": "b", "arguments": {"x": 1}}  \n\t</tool_call>\n'
        '<tool_call>{"name": " c "}</tool_call>'
    )
    calls, errors = parse_tool_calls(text)
    assert errors == []
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "a", {}),
        ("call_2", "b", {"x": 1}),
        ("call_3", "c", {}),
    ]


def test_parse_nested_braces_and_tags_inside_strings():
    args = {"code": "def f():\n    return {'a': {1: 2}}  # }}} </tool_call>", "n": {"m": [1, {}]}}
    text = render_tool_call(ToolCall(id="x", name="write", arguments=args))
    calls, errors = parse_tool_calls(f"ok\n{text}\nbye")
    assert errors == []
    assert calls[0].arguments == args


def test_parse_bad_json_reports_position_and_keeps_going():
    text = (
        '<tool_call>{"name": "a", "arguments": {"x": 1,}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>'
    )
    calls, errors = parse_tool_calls(text)
    assert [c.id for c in calls] == ["call_2"]
    [error] = errors
    assert error.startswith("tool call 1 is not valid JSON: ")
    assert "(at char 35)" in error


def test_parse_missing_name_and_bad_arguments():
    text = (
        '<tool_call>{"arguments": {}}</tool_call>'
        '<tool_call>{"name": "a", "arguments": [1]}</tool_call>'
        "<tool_call>[1, 2]</tool_call>"
        '<tool_call>{"name": "a"} extra</tool_call>'
    )
    calls, errors = parse_tool_calls(text)
    assert calls == []
    assert errors[0].startswith('tool call 1 has no "name"')
    assert errors[1] == 'tool call 2 (a): "arguments" must be a JSON object'
    assert errors[2].startswith("tool call 3 must be a JSON object")
    assert errors[3].startswith("tool call 4 has text after its JSON object")


def test_parse_lenient_forms():
    text = (
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": 2}"}</tool_call>'
        '<tool_call>{"name": "b", "parameters": {"y": 3}}</tool_call>'
        '<tool_call>{"name": "c", "arguments": {"z": 4}}'  # generation stopped on the tag
    )
    calls, errors = parse_tool_calls(text)
    assert errors == []
    assert [c.arguments for c in calls] == [{"x": 2}, {"y": 3}, {"z": 4}]


def test_parse_unclosed_bad_json_at_end():
    calls, errors = parse_tool_calls('<tool_call>{"name": "a", "argu')
    assert calls == []
    assert errors[0].startswith("tool call 1 is not valid JSON")


def test_render_round_trips():
    call = ToolCall(id="call_1", name="édit", arguments={"path": "a.py", "text": 'x = "ü"\n'})
    text = render_tool_call(call)
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    assert "ü" in text
    assert parse_tool_calls(text) == ([call], [])


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("THOUGHT: list\n\n```bash\nls -la\n```", "ls -la"),
        ("```sh\ncd /src && make\n```\n", "cd /src && make"),
        ("```bash  \n  echo hi\n\n```", "echo hi"),
        ("```bash\ncat <<'EOF' > a.md\nuse `x` and ```y```\nEOF\n```", None),
        ("```bash\nsubmit\n```", SUBMIT),
        ("done\n```bash\n echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT \n```", SUBMIT),
        ("```python\nprint(1)\n```\n```bash\npwd\n```", "pwd"),
    ],
)
def test_bash_block_ok(text, command):
    got, error = parse_bash_block(text)
    assert error is None
    if command is None:  # backticks inside the command survive
        assert got == "cat <<'EOF' > a.md\nuse `x` and ```y```\nEOF"
    else:
        assert got == command


def test_bash_submit_must_be_exact():
    assert parse_bash_block("```bash\nsubmit now\n```") == ("submit now", None)


def test_bash_block_errors():
    command, error = parse_bash_block("I think we are done.")
    assert command is None
    assert error == (
        "no ```bash block found: reply with exactly one ```bash block containing the command to run"
    )
    command, error = parse_bash_block("```bash\nls\n```\nand\n```bash\npwd\n```\n```sh\nid\n```")
    assert command is None
    assert error.startswith("found 3 ```bash blocks") and "exactly one" in error
    assert parse_bash_block("```bash\n\n```")[1].startswith("the ```bash block is empty")
    assert "not closed" in parse_bash_block("```bash\nls -la")[1]


def test_system_prompt_tool_call_section():
    read = {"name": "read", "description": "Read a file.", "parameters": {"type": "object"}}
    text = system_prompt_section("tool_call", [BASH_TOOL, read])
    assert text.count("<tool_call>") == 2  # the explanation and the single example
    assert '{"name": "bash", "arguments": {"command": "..."}}' in text
    assert "## bash\nRun a shell command." in text
    assert json.dumps(BASH_TOOL["function"]["parameters"]) in text
    assert "## read\nRead a file." in text
    example = text[text.index("<tool_call>\n") : text.index("</tool_call>") + len("</tool_call>")]
    assert parse_tool_calls(example)[0][0].name == "bash"


def test_system_prompt_example_uses_schema_hints():
    tool = {
        "name": "edit",
        "parameters": {
            "properties": {
                "path": {"type": "string", "examples": ["src/app.py"]},
                "mode": {"enum": ["replace", "append"]},
                "line": {"type": "integer"},
            },
            "required": ["path", "mode", "line"],
        },
    }
    text = system_prompt_section("tool_call", [tool])
    assert '{"path": "src/app.py", "mode": "replace", "line": 1}' in text


def test_system_prompt_bash_section():
    text = system_prompt_section("bash", [BASH_TOOL])
    assert text.count("```bash") == 2
    example = text[text.index("THOUGHT:") :]
    assert parse_bash_block(example) == ("ls -la", None)
    assert "`submit`" in text


def test_system_prompt_errors():
    with pytest.raises(ValueError, match="unknown action format 'xml'"):
        system_prompt_section("xml", [])
    with pytest.raises(ValueError, match="at least one tool"):
        system_prompt_section("tool_call", [])
