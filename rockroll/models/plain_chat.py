"""How a conversation becomes a chat template's input for templates that lack something: tool
results and tool calls written as plain turns, the tools described in the system message, and
consecutive turns of one role joined for templates that demand alternating roles."""

from __future__ import annotations

import json

from rockroll.models import textformat
from rockroll.models.messages import Message


def as_plain(message: dict) -> dict:
    """A message for templates without tool support: tool results become user observations and
    tool calls are written into the assistant text the way the loop's text format expects."""
    role, content = message["role"], message.get("content") or ""
    if role == "tool":
        return {"role": "user", "content": f"Observation: {content}"}
    if role == "assistant" and message.get("tool_calls") and "<tool_call>" not in content:
        blocks = [
            "<tool_call>"
            + json.dumps(
                {
                    "name": c["function"]["name"],
                    "arguments": json.loads(c["function"]["arguments"]),
                },
                ensure_ascii=False,
            )
            + "</tool_call>"
            for c in message["tool_calls"]
        ]
        content = "\n".join([content, *blocks] if content else blocks)
    return {"role": role, "content": content}


def with_tool_section(messages: list[Message], tools: list[dict]) -> list[Message]:
    """The messages with the tool_call format and the tools described in the system message,
    for templates that cannot render tools themselves."""
    section = textformat.system_prompt_section("tool_call", tools)
    if messages and messages[0].role == "system":
        first = messages[0].model_copy(update={"content": f"{messages[0].content}\n{section}"})
        return [first, *messages[1:]]
    return [Message(role="system", content=section), *messages]


def merge(messages: list[dict]) -> list[dict]:
    """Consecutive messages of one role joined, for templates that demand alternating roles."""
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out
