"""Keep a long agent run inside the model's context window, in two tiers.

Tier 1 (free, no model call) blanks what later messages make redundant: older results of a
repeated read-only call, and the bulky arguments of old write_file/edit calls (the file holds
them now). Tier 2 (one model call) replaces the middle of the history with a summary. The
system prompt, the task and the last `keep_last` messages always stay verbatim, so the model
keeps its instructions and its most recent work exactly as it saw them.

Both tiers rewrite earlier messages, which breaks the "each prompt is a prefix of the next"
property that training on whole trajectories needs; `mode="linear"` keeps it by never touching
anything (the run then ends on the loop's own limits instead).

Native tool messages (role "tool", matched by tool_call_id) get both tier-1 passes. Text formats
(`<tool_call>` JSON in assistant content, results in "Observation (...)" user messages) only get
write arguments stripped: matching observations to calls by position is fragile, so repeated
reads are left alone there. Unparseable `<tool_call>` blocks are left as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from rockroll.agent.tools import render_todo
from rockroll.models import Model
from rockroll.models.messages import Message, ToolCall

READ_ONLY_TOOLS = frozenset({"read_file", "glob", "grep", "list_dir"})
WRITE_TOOLS = frozenset({"write_file", "edit"})
BULKY_ARGS = ("content", "new_string", "old_string")
DROPPED = "[result dropped: the same call was repeated later]"
SUMMARY_HEADER = "Summary of earlier work:\n"
SUMMARY_PROMPT = (
    "You compress the history of an AI agent's work on a task so that it can continue within "
    "its context window. Write a concise summary of the history below: the progress made, the "
    "findings (facts learned about the code or system, errors seen and their causes), every "
    "file created or changed and how, and the work that remains. Keep exact paths, names and "
    "commands that matter. Reply with the summary only; do not call tools."
)

_OMITTED = re.compile(r"\[omitted: \d+ characters\]")
_OPEN = "<tool_call>"
_DECODER = json.JSONDecoder()
_CLIP = 2000  # characters of one old message shown to the summarizer


@dataclass
class ContextManager:
    """Compacts a message list once it passes `tier1` / `tier2` fractions of `window` tokens."""

    window: int
    tier1: float = 0.6
    tier2: float = 0.8
    keep_last: int = 10
    mode: Literal["compact", "linear"] = "compact"
    summary_max_tokens: int = 1024

    def manage(
        self, messages: list[Message], model: Model, todo: list[dict]
    ) -> tuple[list[Message], list[dict]]:
        """The messages to send next and the compaction events; the input list is not changed.

        After tier 2 the count is at most head + summary + tail (the system prompt, the task,
        the summary message and the last `keep_last` messages or a few more); that is below
        `tier2 * window` unless those alone are bigger, which no compaction here can fix.
        """
        if self.mode == "linear":
            return messages, []
        before = model.count_tokens(messages)
        if before <= self.tier1 * self.window:
            return messages, []
        events: list[dict] = []
        messages, dropped, stripped = compact_tier1(messages, self.keep_last)
        tokens = model.count_tokens(messages)
        if dropped or stripped:
            events.append(
                {
                    "type": "tier1",
                    "tokens_before": before,
                    "tokens_after": tokens,
                    "dropped_results": dropped,
                    "stripped_calls": stripped,
                }
            )
        if tokens > self.tier2 * self.window:
            messages, event = self._tier2(messages, model, todo, tokens)
            if event is not None:
                events.append(event)
        return messages, events

    def _tier2(
        self, messages: list[Message], model: Model, todo: list[dict], before: int
    ) -> tuple[list[Message], dict | None]:
        head_end = _head_end(messages)
        cut = _tail_start(messages, head_end, self.keep_last)
        if cut <= head_end:
            return messages, None  # nothing old enough to compact
        head, middle, tail = messages[:head_end], messages[head_end:cut], messages[cut:]
        event: dict = {"type": "tier2", "tokens_before": before, "summarized": len(middle)}
        try:
            request = self._summary_request(middle, model)
            completion = model.complete(request, None, max_tokens=self.summary_max_tokens)
            summary = completion.message.content.strip()
            if not summary:
                raise ValueError("the model returned an empty summary")
        except Exception as exc:  # whatever failed, the run must go on without a summary
            kept = self._drop_oldest(head, middle, tail, model, todo)
            out = [*head, _dropped_note(len(middle) - len(kept), todo), *kept, *tail]
            event.update(
                fallback="drop",
                error=f"{type(exc).__name__}: {exc}",
                summarized=0,
                dropped=len(middle) - len(kept),
            )
        else:
            out = [*head, _note(SUMMARY_HEADER + summary, todo), *tail]
            event.update(
                summary_prompt_tokens=completion.prompt_tokens,
                summary_completion_tokens=completion.completion_tokens,
            )
        event["tokens_after"] = model.count_tokens(out)
        return out, event

    def _summary_request(self, middle: list[Message], model: Model) -> list[Message]:
        """The summarizer's prompt, with the oldest messages after the first left out to fit.

        Each part is counted once, so a real tokenizer is not run once per dropped message.
        """
        parts = [_render(m) for m in middle]
        sizes = [model.count_tokens([Message(role="user", content=p)]) for p in parts]
        budget = self.window - self.summary_max_tokens
        budget -= model.count_tokens([Message(role="system", content=SUMMARY_PROMPT)])
        # parts[0] may be an earlier summary, the most condensed history there is: keep it.
        first, total = 1, sum(sizes)
        while first < len(parts) - 1 and total > budget:
            total -= sizes[first]
            first += 1
        history = "\n\n".join(parts[:1] + parts[first:])
        return [
            Message(role="system", content=SUMMARY_PROMPT),
            Message(role="user", content=history),
        ]

    def _drop_oldest(
        self,
        head: list[Message],
        middle: list[Message],
        tail: list[Message],
        model: Model,
        todo: list[dict],
    ) -> list[Message]:
        """The newest part of `middle` that fits under tier 2, starting at a whole turn."""
        limit = self.tier2 * self.window
        start = 0
        while start < len(middle):
            kept = middle[start:]
            note = _dropped_note(start, todo)
            if model.count_tokens([*head, note, *kept, *tail]) <= limit:
                return kept
            start += 1
            while start < len(middle) and _is_result(middle[start]):
                start += 1
        return []


def compact_tier1(messages: list[Message], keep_last: int) -> tuple[list[Message], int, int]:
    """Tier 1 without a model: (messages, results dropped, calls stripped).

    Only messages before the last `keep_last` change; a repeated read's newest result is kept
    wherever it is. Running it again on its own output changes nothing.
    """
    out = list(messages)
    old = len(out) - keep_last
    calls: dict[str, str] = {}  # tool_call_id -> key of a read-only call
    latest: dict[str, int] = {}  # key -> index of its newest result
    results: list[tuple[int, str]] = []
    for i, m in enumerate(out):
        for c in m.tool_calls if m.role == "assistant" else []:
            if c.name in READ_ONLY_TOOLS:
                calls[c.id] = json.dumps([c.name, c.arguments], sort_keys=True)
        if m.role == "tool" and m.tool_call_id in calls:
            key = calls.pop(m.tool_call_id)  # ids may be reused across turns
            latest[key] = i
            results.append((i, key))
    dropped = 0
    for i, key in results:
        if i < old and latest[key] != i and out[i].content != DROPPED:
            out[i] = out[i].model_copy(update={"content": DROPPED})
            dropped += 1
    stripped = 0
    for i in range(max(old, 0)):
        m = out[i]
        if m.role != "assistant":
            continue
        new_calls = [_strip_call(c) for c in m.tool_calls]
        content = _strip_text_calls(m.content)
        changed = sum(a is not b for a, b in zip(new_calls, m.tool_calls, strict=True))
        changed += content != m.content
        if changed:
            out[i] = m.model_copy(update={"tool_calls": new_calls, "content": content})
            stripped += changed
    return out, dropped, stripped


def _strip_args(name: object, args: object) -> dict | None:
    """`args` with bulky values replaced, or None when there is nothing to replace."""
    if name not in WRITE_TOOLS or not isinstance(args, dict):
        return None
    bulky = [
        k for k in BULKY_ARGS if isinstance(args.get(k), str) and not _OMITTED.fullmatch(args[k])
    ]
    if not bulky:
        return None
    return {**args, **{k: f"[omitted: {len(args[k])} characters]" for k in bulky}}


def _strip_call(call: ToolCall) -> ToolCall:
    args = _strip_args(call.name, call.arguments)
    return call if args is None else call.model_copy(update={"arguments": args})


def _strip_text_calls(text: str) -> str:
    """`text` with the arguments of each parseable `<tool_call>` write block stripped."""
    pos = 0
    while (start := text.find(_OPEN, pos)) != -1:
        begin = start + len(_OPEN)
        while begin < len(text) and text[begin].isspace():
            begin += 1
        try:
            obj, end = _DECODER.raw_decode(text, begin)
        except json.JSONDecodeError:
            pos = begin
            continue
        args = _strip_args(obj.get("name"), obj.get("arguments")) if isinstance(obj, dict) else None
        if args is None:
            pos = end
            continue
        payload = json.dumps({**obj, "arguments": args}, ensure_ascii=False)
        text = text[:begin] + payload + text[end:]
        pos = begin + len(payload)
    return text


def _head_end(messages: list[Message]) -> int:
    """Just past the first user message (the task), or past the leading system messages."""
    for i, m in enumerate(messages):
        if m.role == "user":
            return i + 1
        if m.role != "system":
            return i
    return len(messages)


def _is_result(m: Message) -> bool:
    """A tool result, native or text: it must stay right after the call that produced it."""
    return m.role == "tool" or (m.role == "user" and m.content.startswith("Observation ("))


def _tail_start(messages: list[Message], head_end: int, keep_last: int) -> int:
    cut = max(head_end, len(messages) - keep_last)
    while cut > head_end and cut < len(messages) and _is_result(messages[cut]):
        cut -= 1
    return cut


def _note(text: str, todo: list[dict]) -> Message:
    if todo:
        text += "\n\nCurrent plan:\n" + render_todo(todo)
    return Message(role="user", content=text)


def _dropped_note(n: int, todo: list[dict]) -> Message:
    return _note(f"[{n} earlier messages were dropped to fit the context window]", todo)


def _render(m: Message) -> str:
    """One old message as plain text for the summarizer, clipped in the middle if long."""
    label = f"tool result ({m.name})" if m.role == "tool" and m.name else m.role
    text = m.content
    for c in m.tool_calls:
        text += f"\ncall {c.name} {json.dumps(c.arguments, ensure_ascii=False)}"
    text = text.strip()
    if len(text) > _CLIP:
        half = _CLIP // 2
        text = f"{text[:half]}\n[... {len(text) - _CLIP} characters ...]\n{text[-half:]}"
    return f"[{label}]\n{text}"
