"""Context management on synthetic long sessions: linear mode, tier 1, tier 2 and its fallback."""

from __future__ import annotations

import json

import pytest

from rockroll.agent.context import DROPPED, SUMMARY_HEADER, SUMMARY_PROMPT, ContextManager
from rockroll.agent.tools import render_todo
from rockroll.models import ScriptedModel, approx_tokens
from rockroll.models.messages import Message, ToolCall
from rockroll.models.textformat import parse_tool_calls, render_tool_call

TODO = [
    {"id": 1, "content": "find the bug", "status": "done"},
    {"id": 2, "content": "fix parse()", "status": "in_progress"},
]


class Counter:
    """A unique id for every tool call of one session."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"call_{self.n}"


def turn(ids: Counter, name: str, args: dict, output: str) -> list[Message]:
    call = ToolCall(id=ids(), name=name, arguments=args)
    return [
        Message(role="assistant", content=f"calling {name}", tool_calls=[call]),
        Message(role="tool", content=output, tool_call_id=call.id, name=name),
    ]


def start() -> list[Message]:
    return [
        Message(role="system", content="You are an agent."),
        Message(role="user", content="Fix the bug in parse()."),
    ]


def long_session(turns: int, ids: Counter | None = None) -> list[Message]:
    """Unique reads only, so tier 1 has nothing to drop."""
    ids = ids or Counter()
    messages = start()
    for i in range(turns):
        messages += turn(ids, "read_file", {"path": f"f{i}.py"}, f"output of turn {i} " + "x" * 400)
    return messages


def unpaired(messages: list[Message]) -> list[str]:
    """Tool results whose call is not in an earlier assistant message."""
    seen: set[str] = set()
    bad = []
    for m in messages:
        seen.update(c.id for c in m.tool_calls)
        if m.role == "tool" and m.tool_call_id not in seen:
            bad.append(m.tool_call_id)
    return bad


def test_linear_mode_never_changes_anything() -> None:
    messages = long_session(30)
    original = [m.model_copy(deep=True) for m in messages]
    model = ScriptedModel(["unused"])
    cm = ContextManager(window=100, keep_last=2, mode="linear")
    out, events = cm.manage(messages, model, TODO)
    assert out == original and events == [] and model.seen == []


def test_below_tier1_nothing_changes() -> None:
    messages = long_session(3)
    cm = ContextManager(window=approx_tokens(messages) * 2)
    assert cm.manage(messages, ScriptedModel([]), []) == (messages, [])


def test_tier1_drops_repeated_reads_and_strips_old_write_args() -> None:
    ids = Counter()
    body = "def parse():\n    return 1\n" * 40
    new = "def parse():\n    return 2\n"
    messages = start()
    messages += turn(ids, "read_file", {"path": "a.py"}, body)  # 2, 3
    messages += turn(ids, "write_file", {"path": "b.py", "content": body}, "wrote b.py")  # 4, 5
    messages += turn(
        ids, "edit", {"path": "a.py", "old_string": body, "new_string": new}, "edited"
    )  # 6, 7
    messages += turn(ids, "read_file", {"path": "a.py"}, new)  # 8, 9
    messages += turn(ids, "grep", {"pattern": "parse"}, "a.py:1")  # 10, 11
    messages += turn(ids, "read_file", {"path": "a.py"}, new)  # 12, 13 (newest a.py read)
    messages += turn(ids, "grep", {"pattern": "parse"}, "a.py:1")  # 14, 15 (in the tail)
    messages += turn(ids, "write_file", {"path": "c.py", "content": body}, "wrote c.py")  # tail
    original = [m.model_copy(deep=True) for m in messages]
    before = approx_tokens(messages)
    cm = ContextManager(window=int(before / 0.7), keep_last=4)  # over tier 1, under tier 2
    model = ScriptedModel([])

    out, events = cm.manage(messages, model, TODO)

    assert messages == original  # the input list is left alone
    assert [out[i].content for i in (3, 9)] == [DROPPED, DROPPED]
    assert out[13].content == new  # the newest read of a.py stays
    assert out[11].content == DROPPED  # grep's repeat is in the tail; its older result goes
    assert out[4].tool_calls[0].arguments == {
        "path": "b.py",
        "content": f"[omitted: {len(body)} characters]",
    }
    assert out[6].tool_calls[0].arguments == {
        "path": "a.py",
        "old_string": f"[omitted: {len(body)} characters]",
        "new_string": f"[omitted: {len(new)} characters]",
    }
    assert out[-4:] == original[-4:]  # the write in the tail keeps its content
    assert [m.role for m in out] == [m.role for m in original]
    assert out[:3] == original[:3]
    assert unpaired(out) == []
    assert events == [
        {
            "type": "tier1",
            "tokens_before": before,
            "tokens_after": approx_tokens(out),
            "dropped_results": 3,
            "stripped_calls": 2,
        }
    ]
    assert approx_tokens(out) < before and model.seen == []
    assert cm.manage(out, model, TODO) == (out, [])  # idempotent: nothing left to do


def test_tier1_strips_text_format_write_calls() -> None:
    body = "y" * 500
    write = ToolCall(id="call_1", name="write_file", arguments={"path": "a.py", "content": body})
    broken = '<tool_call>\n{"name": "write_file", "arguments": {"content": "' + body
    messages = [
        *start(),
        Message(role="assistant", content="Writing.\n" + render_tool_call(write)),
        Message(role="user", content="Observation (write_file):\nwrote a.py"),
        Message(role="assistant", content=broken),
        Message(role="user", content="Observation (format error):\nerror: not valid JSON"),
        *[Message(role="user", content="z" * 100) for _ in range(3)],
    ]
    cm = ContextManager(window=int(approx_tokens(messages) / 0.7), keep_last=3)

    out, events = cm.manage(messages, ScriptedModel([]), [])

    assert out[2].content.startswith("Writing.\n")
    calls, errors = parse_tool_calls(out[2].content)
    assert errors == []
    assert calls[0].arguments == {"path": "a.py", "content": "[omitted: 500 characters]"}
    assert out[4].content == broken  # unparseable: left as it is
    assert events[0]["type"] == "tier1" and events[0]["stripped_calls"] == 1


def test_tier2_summarizes_the_middle() -> None:
    messages = long_session(40)
    original = [m.model_copy(deep=True) for m in messages]
    before = approx_tokens(messages)
    cm = ContextManager(window=int(before / 0.9), keep_last=6, summary_max_tokens=100)
    model = ScriptedModel(["Read f0.py to f36.py; the bug is in parse()."])

    out, events = cm.manage(messages, model, TODO)

    assert out[:2] == original[:2]
    assert out[2].role == "user"
    assert out[2].content == (
        SUMMARY_HEADER
        + "Read f0.py to f36.py; the bug is in parse()."
        + "\n\nCurrent plan:\n"
        + render_todo(TODO)
    )
    assert out[3:] == original[-6:]
    assert len(out) == 9
    after = approx_tokens(out)
    assert after <= cm.tier2 * cm.window
    assert [e["type"] for e in events] == ["tier2"]  # no repeats, no writes: tier 1 did nothing
    event = events[0]
    assert (event["tokens_before"], event["tokens_after"]) == (before, after)
    assert event["summarized"] == len(original) - 2 - 6
    assert event["summary_prompt_tokens"] > 0
    # One call, no tools, shown the old history and not the kept tail.
    assert len(model.seen) == 1 and model.seen_tools == [None]
    system, history = model.seen[0]
    assert system.role == "system" and system.content == SUMMARY_PROMPT
    assert "output of turn 0" in history.content and "output of turn 36" in history.content
    assert "output of turn 37" not in history.content
    assert 'call read_file {"path": "f0.py"}' in history.content


def test_summary_request_fits_the_window() -> None:
    """Too much history for one call: the first message and the newest ones are sent."""
    messages = long_session(40)
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=6)
    cm.summary_max_tokens = cm.window // 2
    model = ScriptedModel(["summary"])
    cm.manage(messages, model, [])
    history = model.seen[0][1].content
    assert approx_tokens(model.seen[0]) <= cm.window - cm.summary_max_tokens
    assert history.startswith('[assistant]\ncalling read_file\ncall read_file {"path": "f0.py"}')
    assert "output of turn 36" in history and "output of turn 10" not in history


def test_tier2_again_folds_the_previous_summary_in() -> None:
    ids = Counter()
    messages = long_session(40, ids)
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=6)
    model = ScriptedModel(["first summary", "second summary"])
    out, _ = cm.manage(messages, model, [])
    for i in range(40):
        out += turn(ids, "read_file", {"path": f"g{i}.py"}, "w" * 400)
    out, events = cm.manage(out, model, [])
    assert out[2].content == SUMMARY_HEADER + "second summary"
    assert "first summary" in model.seen[1][1].content
    assert events[0]["tokens_after"] <= cm.tier2 * cm.window


@pytest.mark.parametrize("keep_last", range(1, 9))
@pytest.mark.parametrize("fail", [False, True])
def test_tier2_never_splits_a_call_from_its_results(keep_last: int, fail: bool) -> None:
    ids = Counter()
    messages = start()
    for i in range(15):  # three parallel calls a turn: assistant, tool, tool, tool
        calls = [ToolCall(id=ids(), name="grep", arguments={"pattern": f"p{i}{j}"}) for j in "abc"]
        messages.append(Message(role="assistant", tool_calls=calls))
        messages += [
            Message(role="tool", content="r" * 300, tool_call_id=c.id, name="grep") for c in calls
        ]
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=keep_last)
    model = ScriptedModel([] if fail else ["summary"])

    out, events = cm.manage(messages, model, [])

    assert unpaired(out) == []
    tail = out[3:]
    assert tail[0].role == "assistant"
    assert len(tail) >= keep_last and tail == messages[-len(tail) :]
    assert events[-1]["type"] == "tier2"


def test_tier2_text_format_keeps_observation_with_its_call() -> None:
    messages = start()
    for i in range(20):
        call = ToolCall(id="call_1", name="bash", arguments={"command": f"cat f{i}"})
        messages.append(Message(role="assistant", content=render_tool_call(call)))
        messages.append(Message(role="user", content="Observation (bash):\n" + "o" * 300))
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=5)
    out, _ = cm.manage(messages, ScriptedModel(["summary"]), [])
    assert out[3].role == "assistant" and out[3:] == messages[-6:]


def test_tier2_summary_failure_drops_oldest_middle_messages() -> None:
    messages = long_session(40)
    original = [m.model_copy(deep=True) for m in messages]
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=6)
    model = ScriptedModel([])  # raises ModelError: no replies left

    out, events = cm.manage(messages, model, TODO)

    assert out[:2] == original[:2]
    assert out[2].content.startswith("[") and "earlier messages were dropped" in out[2].content
    assert render_todo(TODO) in out[2].content
    assert out[-6:] == original[-6:]
    assert out[3:] == original[-len(out[3:]) :]  # a contiguous newest stretch is kept
    assert out[3].role == "assistant" and unpaired(out) == []
    assert approx_tokens(out) <= cm.tier2 * cm.window
    (event,) = events
    assert event["type"] == "tier2" and event["fallback"] == "drop"
    assert "ModelError" in event["error"] and "no more replies" in event["error"]
    assert event["dropped"] == len(original) - len(out) + 1
    assert event["tokens_after"] == approx_tokens(out) < event["tokens_before"]


def test_empty_summary_counts_as_a_failure() -> None:
    messages = long_session(40)
    cm = ContextManager(window=int(approx_tokens(messages) / 0.9), keep_last=6)
    _, events = cm.manage(messages, ScriptedModel(["   "]), [])
    assert events[0]["fallback"] == "drop" and "empty summary" in events[0]["error"]
    assert json.dumps(events)  # events are plain JSON for the run record
