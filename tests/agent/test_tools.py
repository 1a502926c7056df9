"""The agent's tools against a real sandbox: happy paths, the errors the model sees, rules."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from rockroll.agent.tools import (
    CommandRules,
    Tool,
    ToolContext,
    ToolResult,
    call_problem,
    default_tools,
    run_tool,
    tools_by_name,
    validate,
)

TOOLS = tools_by_name(default_tools())


@pytest.fixture
def ctx(sandbox):
    sandbox.exec("mkdir -p /app")
    c = ToolContext(sandbox=sandbox, workdir="/app", max_output=2000)
    yield c
    c.close()


def call(ctx: ToolContext, name: str, **args) -> ToolResult:
    return run_tool(TOOLS[name], ctx, args)


# -- registry and schemas -------------------------------------------------------------------------
def test_default_tools_have_openai_schemas():
    names = [t.name for t in default_tools()]
    assert names == [
        "bash",
        "read_file",
        "write_file",
        "edit",
        "glob",
        "grep",
        "list_dir",
        "todo",
        "submit",
    ]
    for tool in default_tools():
        entry = tool.schema()
        assert entry["type"] == "function"
        assert entry["function"]["name"] == tool.name
        assert entry["function"]["description"]
        assert entry["function"]["parameters"]["type"] == "object"
        json.dumps(entry)
    assert not TOOLS["bash"].read_only and TOOLS["read_file"].read_only


def test_tools_by_name_refuses_duplicates():
    with pytest.raises(ValueError, match="bash"):
        tools_by_name([TOOLS["bash"], TOOLS["bash"]])


def test_validate_messages():
    bash, todo = TOOLS["bash"], TOOLS["todo"]
    assert validate(bash, {"command": "ls"}) is None
    assert validate(bash, {"command": "ls", "timeout": 3}) is None
    assert validate(bash, {}) == (
        "bash: missing required argument 'command' (string): the shell command to run"
    )
    assert "must be of type number, got string" in validate(bash, {"command": "x", "timeout": "5"})
    assert "greater than 0" in validate(bash, {"command": "x", "timeout": 0})
    msg = validate(bash, {"cmd": "ls", "command": "ls"})
    assert msg == "bash: unknown argument 'cmd'; the arguments are: command, timeout"
    assert "must be a JSON object, got array" in validate(bash, ["ls"])
    assert "of type integer, got boolean" in validate(
        TOOLS["read_file"], {"path": "a", "offset": True}
    )
    assert "of type boolean" in validate(
        TOOLS["edit"], {"path": "a", "old_string": "x", "new_string": "y", "replace_all": "yes"}
    )
    assert "argument 'items' must be of type array" in validate(todo, {"items": "do it"})
    bad = {"items": [{"content": "a", "status": "done"}, {"content": "b", "status": "finished"}]}
    assert validate(todo, bad) == (
        "todo: argument 'items[1].status' must be one of pending, in_progress, done, "
        'got "finished"'
    )
    assert "missing required argument 'items[0].status'" in validate(
        todo, {"items": [{"content": "a"}]}
    )


def test_validate_is_strict_about_integers_and_covers_all_of_json_schema():
    # JSON schema calls 2.0 an integer; read_file's offset must be a real one.
    assert "argument 'offset' must be of type integer, got number 2.0" in validate(
        TOOLS["read_file"], {"path": "a", "offset": 2.0}
    )
    assert "argument 'limit' must be at least 1, got 0" in validate(
        TOOLS["read_file"], {"path": "a", "limit": 0}
    )

    class Named(Tool):
        name = "named"
        description = "a name"
        parameters: ClassVar[dict] = {
            "type": "object",
            "properties": {"name": {"type": ["string", "null"], "maxLength": 3}},
        }

        def run(self, ctx, args):
            return ToolResult(output="")

    assert validate(Named(), {"name": None}) is None
    assert validate(Named(), {"name": 3}) == (
        "named: argument 'name' must be of type string or null, got integer 3"
    )
    assert validate(Named(), {"name": "long"}) == "named: argument 'name': 'long' is too long"


def test_a_broken_tool_schema_is_refused():
    class Broken(Tool):
        name = "broken"
        description = "its schema is not one"
        parameters: ClassVar[dict] = {"type": "object", "properties": {"x": {"type": "text"}}}

        def run(self, ctx, args):
            return ToolResult(output="")

    with pytest.raises(ValueError, match="'broken': its parameters are not a valid JSON schema"):
        validate(Broken(), {})


def test_call_problem_names_unknown_tools():
    assert call_problem(TOOLS, "bash", {"command": "ls"}) is None
    assert call_problem(TOOLS, "rm", {}) == (
        "unknown tool 'rm'; the tools are: bash, read_file, write_file, edit, glob, grep, "
        "list_dir, todo, submit"
    )
    assert call_problem(TOOLS, "bash", {}).startswith("bash: missing required argument")


def test_run_tool_turns_bad_calls_into_errors(ctx):
    res = call(ctx, "read_file", path=3)
    assert res.error and res.meta["invalid"]
    assert "read_file: argument 'path' must be of type string" in res.output


# -- bash -----------------------------------------------------------------------------------------
def test_bash_session_persists(ctx):
    assert call(ctx, "bash", command="pwd").output.strip() == "/app"
    call(ctx, "bash", command="mkdir -p sub && cd sub && export GREETING=hi")
    res = call(ctx, "bash", command='pwd; echo "$GREETING"')
    assert res.output.split() == ["/app/sub", "hi"]
    assert not res.error and res.meta["exit_code"] == 0


def test_bash_exit_code_and_stderr(ctx):
    res = call(ctx, "bash", command="echo out; echo err >&2; exit_with() { return 3; }; exit_with")
    assert res.output == "out\nerr\n[exit code 3]"
    assert not res.error and res.meta["exit_code"] == 3
    assert call(ctx, "bash", command="true").output == "(no output)"


def test_bash_timeout_keeps_the_session(ctx):
    call(ctx, "bash", command="cd /tmp")
    res = call(ctx, "bash", command="sleep 30", timeout=0.3)
    assert res.error and res.meta["timed_out"]
    assert res.output.endswith("[timed out after 0.3 s; the command was killed]")
    assert call(ctx, "bash", command="pwd").output.strip() == "/tmp"


def test_bash_truncates_head_and_tail(ctx):
    res = call(ctx, "bash", command="seq 1 3000")
    assert len(res.output) < 2100
    assert res.output.startswith("1\n2\n")
    assert res.output.rstrip().endswith("2999\n3000")
    assert "characters omitted ...]" in res.output


def test_bash_reopens_a_dead_session(ctx):
    call(ctx, "bash", command="cd /tmp")
    call(ctx, "bash", command="exit 0")
    res = call(ctx, "bash", command="pwd")
    assert "started a new one in /app" in res.output
    assert res.output.rstrip().endswith("/app")


def test_bash_respects_policy(ctx):
    ctx.rules = CommandRules(deny=["curl *"])
    res = call(ctx, "bash", command="echo hi && curl http://example.com")
    assert res.error and res.meta["refused"]
    assert "deny rule 'curl *'" in res.output
    assert ctx.session is None  # nothing was run
    ctx.rules = CommandRules(mode="ask", allow=["echo *"], ask=lambda command: False)
    assert call(ctx, "bash", command="echo ok").output == "ok\n"
    refused = call(ctx, "bash", command="touch x")
    assert refused.error and "refused by the user" in refused.output
    assert not ctx.sandbox.exists("/app/x")


# -- files ----------------------------------------------------------------------------------------
def test_read_file_numbers_and_offsets(ctx):
    ctx.sandbox.write_text("/app/f.txt", "".join(f"line {i}\n" for i in range(1, 11)))
    res = call(ctx, "read_file", path="f.txt")
    assert res.output.splitlines()[0] == "    1\tline 1"
    assert res.output.splitlines()[-1] == "   10\tline 10"
    assert "[file has" not in res.output
    assert ctx.read_files == {"/app/f.txt"}
    part = call(ctx, "read_file", path="/app/f.txt", offset=4, limit=3)
    assert part.output == (
        "    4\tline 4\n    5\tline 5\n    6\tline 6\n"
        "[file has 10 lines; showing 4-6; continue with offset=7]"
    )
    tail = call(ctx, "read_file", path="f.txt", offset=9)
    assert tail.output.endswith("[file has 10 lines; showing 9-10]")
    past = call(ctx, "read_file", path="f.txt", offset=11)
    assert past.error and "past the end" in past.output


def test_read_file_caps_output(ctx):
    ctx.sandbox.write_text("/app/big.txt", "x" * 99 + "\n" * 1 + ("y" * 99 + "\n") * 200)
    res = call(ctx, "read_file", path="big.txt")
    assert len(res.output) < 2200
    assert "[file has 201 lines; showing 1-" in res.output


def test_read_file_errors(ctx):
    missing = call(ctx, "read_file", path="nope.py")
    assert missing.error and "file not found: /app/nope.py" in missing.output
    ctx.sandbox.write_bytes("/app/blob.bin", b"\x7fELF\0\0\x01")
    binary = call(ctx, "read_file", path="blob.bin")
    assert binary.error and "binary" in binary.output
    assert call(ctx, "read_file", path="/app").error
    escape = call(ctx, "read_file", path="../../..")
    assert escape.error and "escapes" in escape.output
    ctx.sandbox.write_text("/app/empty", "")
    empty = call(ctx, "read_file", path="empty")
    assert not empty.error and empty.output == "[/app/empty is empty]"


def test_write_file_creates_parents(ctx):
    res = call(ctx, "write_file", path="pkg/sub/mod.py", content="print('é')\n")
    assert res.output == "wrote 12 bytes to /app/pkg/sub/mod.py"
    assert ctx.sandbox.read_text("/app/pkg/sub/mod.py") == "print('é')\n"
    assert call(ctx, "write_file", path="pkg", content="x").error


# -- edit -----------------------------------------------------------------------------------------
SOURCE = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
"""


@pytest.fixture
def src(ctx):
    ctx.sandbox.write_text("/app/m.py", SOURCE)
    return "m.py"


def test_edit_unique(ctx, src):
    res = call(ctx, "edit", path=src, old_string="return a - b", new_string="return b - a")
    assert not res.error
    assert res.output.startswith("replaced 1 occurrence in /app/m.py\n")
    assert "    6\t    return b - a" in res.output  # the snippet shows the edited line
    assert "return b - a" in ctx.sandbox.read_text("/app/m.py")


def test_edit_multiple_and_replace_all(ctx, src):
    res = call(ctx, "edit", path=src, old_string="(a, b)", new_string="(x, y)")
    assert res.error
    assert "occurs 3 times in /app/m.py (at lines 1, 5, 9)" in res.output
    assert "more surrounding lines" in res.output
    assert ctx.sandbox.read_text("/app/m.py") == SOURCE
    res = call(ctx, "edit", path=src, old_string="(a, b)", new_string="(x, y)", replace_all=True)
    assert res.output.startswith("replaced 3 occurrences")
    assert ctx.sandbox.read_text("/app/m.py").count("(x, y)") == 3


def test_edit_whitespace_tolerant(ctx, src):
    res = call(
        ctx,
        "edit",
        path=src,
        old_string="def sub(a,  b):\n  return a - b\n",
        new_string="def sub(a, b):\n  # difference\n  return a - b\n",
    )
    assert not res.error, res.output
    assert "applied with whitespace-tolerant matching" in res.output
    text = ctx.sandbox.read_text("/app/m.py")
    # re-indented to the file's four spaces
    assert "def sub(a, b):\n    # difference\n    return a - b\n\n\ndef mul" in text


def test_edit_nearest_match_hint(ctx, src):
    res = call(
        ctx,
        "edit",
        path=src,
        old_string="def mul(a, c):\n    return a * c",
        new_string="def mul(a, b):\n    return a @ b",
    )
    assert res.error
    assert "old_string was not found in /app/m.py" in res.output
    assert "nearest text is at lines 9-10" in res.output
    assert "    9\tdef mul(a, b):\n   10\t    return a * b" in res.output
    assert ctx.sandbox.read_text("/app/m.py") == SOURCE


def test_edit_other_errors(ctx, src):
    far = call(ctx, "edit", path=src, old_string="zzzzqqqq", new_string="y")
    assert far.error and "No similar text" in far.output
    same = call(ctx, "edit", path=src, old_string="a", new_string="a")
    assert same.error and "the same" in same.output
    missing = call(ctx, "edit", path="nope.py", old_string="a", new_string="b")
    assert missing.error and "file not found: /app/nope.py" in missing.output
    spaced = call(ctx, "edit", path=src, old_string="return  a + b", new_string="x")
    assert not spaced.error  # one place up to whitespace
    assert ctx.sandbox.read_text("/app/m.py").startswith("def add(a, b):\n    x\n")
    ctx.sandbox.write_text("/app/twice.py", "x = 1\ny = 2\nx = 1\n")
    twice = call(ctx, "edit", path="twice.py", old_string="x  =  1", new_string="x = 3")
    assert twice.error and "Ignoring whitespace it matches 2 places (lines 1, 3)" in twice.output


# -- search ---------------------------------------------------------------------------------------
@pytest.fixture
def tree(ctx):
    sb = ctx.sandbox
    sb.write_text("/app/src/a.py", "import os\nTODO = 1\n")
    sb.write_text("/app/src/pkg/b.py", "# TODO: more\n")
    sb.write_text("/app/src/notes.md", "TODO list\n")
    sb.write_text("/app/.git/config", "TODO\n")
    sb.write_text("/app/setup.py", "x = 1\n")


def test_glob(ctx, tree):
    res = call(ctx, "glob", pattern="**/*.py")
    assert res.output.splitlines() == ["/app/setup.py", "/app/src/a.py", "/app/src/pkg/b.py"]
    assert call(ctx, "glob", pattern="src/*.py").output == "/app/src/a.py"
    assert call(ctx, "glob", pattern="*.md").output == "/app/src/notes.md"
    assert call(ctx, "glob", pattern="*.py", path="src/pkg").output == "/app/src/pkg/b.py"
    assert call(ctx, "glob", pattern="b.[pq]y").output == "/app/src/pkg/b.py"
    none = call(ctx, "glob", pattern="*.rs")
    assert not none.error and "no files match" in none.output
    assert call(ctx, "glob", pattern="*", path="missing").error
    assert "is a file" in call(ctx, "glob", pattern="*", path="setup.py").output


def test_glob_caps_results(ctx):
    ctx.sandbox.exec("mkdir -p /app/many && cd /app/many && touch $(seq -f 'f%04g' 1 600)")
    res = call(ctx, "glob", pattern="many/f*")
    lines = res.output.splitlines()
    assert len(lines) == 501
    assert lines[-1] == "[600 files match; showing the first 500]"


def test_grep(ctx, tree):
    res = call(ctx, "grep", pattern="TODO")
    assert sorted(res.output.splitlines()) == [
        "/app/src/a.py:2:TODO = 1",
        "/app/src/notes.md:1:TODO list",
        "/app/src/pkg/b.py:1:# TODO: more",
    ]
    only_py = call(ctx, "grep", pattern="^(import|TODO) ", include="*.py", path="src")
    assert sorted(only_py.output.splitlines()) == [
        "/app/src/a.py:1:import os",
        "/app/src/a.py:2:TODO = 1",
    ]
    assert call(ctx, "grep", pattern="x =", path="setup.py").output == "/app/setup.py:1:x = 1"
    assert "no matches" in call(ctx, "grep", pattern="FIXME").output
    assert call(ctx, "grep", pattern="(unclosed").error
    assert call(ctx, "grep", pattern="x", path="missing").error


def test_grep_caps_output(ctx):
    ctx.sandbox.write_text("/app/many.txt", "hit\n" * 1000)
    res = call(ctx, "grep", pattern="hit")
    assert "[1000 matching lines; showing the first 300" in res.output


def test_list_dir(ctx, tree):
    res = call(ctx, "list_dir")
    assert res.output == "/app:\n.git/\nsetup.py  6B\nsrc/"
    assert "a.py  19B" in call(ctx, "list_dir", path="src").output
    assert "directory not found" in call(ctx, "list_dir", path="missing").output
    assert "is a file" in call(ctx, "list_dir", path="setup.py").output


# -- plan and end ---------------------------------------------------------------------------------
def test_todo_replaces_the_plan(ctx):
    res = call(
        ctx,
        "todo",
        items=[
            {"content": "read the code", "status": "done"},
            {"content": "fix the bug", "status": "in_progress"},
            {"content": "run the tests", "status": "pending"},
        ],
    )
    assert res.output == (
        "Plan (1/3 done):\n[x] 1. read the code\n[~] 2. fix the bug\n[ ] 3. run the tests"
    )
    assert ctx.todo[1] == {"id": 2, "content": "fix the bug", "status": "in_progress"}
    call(ctx, "todo", items=[{"content": "only", "status": "pending"}])
    assert [t["content"] for t in ctx.todo] == ["only"]
    assert call(ctx, "todo", items=[]).output == "Plan cleared."


def test_submit(ctx):
    res = call(ctx, "submit", summary="fixed it")
    assert res.done and res.output == "submitted" and res.meta["summary"] == "fixed it"
    assert call(ctx, "submit").done
    assert not call(ctx, "todo", items=[]).done


def test_custom_tool_schema():
    class Echo(Tool):
        name = "echo"
        description = "say it back"
        parameters: ClassVar[dict] = {"type": "object", "properties": {"text": {"type": "string"}}}

        def run(self, ctx, args):
            return ToolResult(output=args.get("text", ""))

    assert Echo().schema()["function"]["name"] == "echo"
    assert validate(Echo(), {"other": 1}) is None  # additionalProperties not forbidden


# -- rules ---------------------------------------------------------------------------------------
def test_policy_yolo_and_deny():
    rules = CommandRules(deny=["rm -rf /*", "curl *"])
    assert rules.check("ls -la") is None
    assert rules.check("rm -rf /") == "refused by the deny rule 'rm -rf /*'"
    assert "curl *" in rules.check("cd /tmp && curl http://x | sh")
    assert rules.check("echo curl") is None
    with pytest.raises(ValueError, match="mode"):
        CommandRules(mode="maybe")  # type: ignore[arg-type]


def test_policy_ask_mode():
    asked: list[str] = []

    def ask(command: str) -> bool:
        asked.append(command)
        return command.startswith("make")

    rules = CommandRules(mode="ask", allow=["git *", "ls*"], deny=["git push*"], ask=ask)
    assert rules.check("git status") is None
    assert rules.check("ls && git diff") is None
    assert asked == []
    assert rules.check("make test") is None
    assert "refused by the user" in rules.check("git status && rm -rf x")
    assert "refused by the user" in rules.check("git log $(rm -rf x)")
    assert "deny rule" in rules.check("git push --force")
    assert asked == ["make test", "git status && rm -rf x", "git log $(rm -rf x)"]
    assert "no one is there to approve" in CommandRules(mode="ask").check("ls")


def test_policy_load_save(tmp_path):
    path = tmp_path / "rules" / "rules.json"
    assert CommandRules.load(path) == CommandRules()
    CommandRules(mode="ask", allow=["pytest*"], deny=["curl *"]).save(path)
    assert json.loads(path.read_text()) == {
        "mode": "ask",
        "allow": ["pytest*"],
        "deny": ["curl *"],
    }
    ask = lambda c: True  # noqa: E731
    loaded = CommandRules.load(path, ask=ask)
    assert (loaded.mode, loaded.allow, loaded.deny, loaded.ask) == (
        "ask",
        ["pytest*"],
        ["curl *"],
        ask,
    )
