"""A backend that replays fixed assistant replies in order, for tests and offline demos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rockroll.errors import ModelError
from rockroll.models.base import Model, approx_tokens
from rockroll.models.messages import Completion, Message, ToolCall


class ScriptedModel:
    """Replays fixed assistant replies in order, for tests and offline demos."""

    context_window = 1_000_000

    def __init__(self, replies: list[Message | str], name: str = "scripted") -> None:
        self.name = name
        self.replies = [
            r if isinstance(r, Message) else Message(role="assistant", content=r) for r in replies
        ]
        self.native_tools = any(r.tool_calls for r in self.replies)
        self.seen: list[list[Message]] = []  # the messages of every `complete` call, in order
        self.seen_tools: list[list[dict] | None] = []

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        """Read a JSON list of strings or {content, tool_calls: [{name, arguments}]} objects.

        Tool call ids are numbered call_1, call_2... across the whole file so they stay unique
        within one conversation; an explicit "id" wins.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise ModelError(f"cannot read scripted replies {path}: {e}") from e
        except json.JSONDecodeError as e:
            raise ModelError(f"scripted replies {path} are not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise ModelError(f"scripted replies {path} must be a JSON list of replies")
        replies: list[Message | str] = []
        n_calls = 0
        for i, item in enumerate(data):
            where = f"reply {i + 1} in {path}"
            if isinstance(item, str):
                replies.append(item)
                continue
            if not isinstance(item, dict):
                raise ModelError(f"{where} must be a string or an object, not {item!r}")
            calls = []
            for call in item.get("tool_calls") or []:
                n_calls += 1
                if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                    raise ModelError(f"{where}: each tool call needs a string 'name': {call!r}")
                args = call.get("arguments") or {}
                if not isinstance(args, dict):
                    raise ModelError(f"{where}: 'arguments' of {call['name']} must be an object")
                calls.append(
                    ToolCall(
                        id=call.get("id") or f"call_{n_calls}", name=call["name"], arguments=args
                    )
                )
            content = item.get("content") or ""
            replies.append(Message(role="assistant", content=content, tool_calls=calls))
        return cls(replies, name=f"scripted:{path}")

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        n = len(self.seen)
        if n >= len(self.replies):
            raise ModelError(f"scripted model has no more replies after {n}")
        self.seen.append(list(messages))
        self.seen_tools.append(tools)
        reply = self.replies[n].model_copy(deep=True)
        return Completion(
            message=reply,
            finish_reason="tool_calls" if reply.tool_calls else "stop",
            prompt_tokens=self.count_tokens(messages),
            completion_tokens=approx_tokens([reply]),
            raw=reply.content,
        )

    def count_tokens(self, messages: list[Message]) -> int:
        return approx_tokens(messages)


def from_spec(path: str, **_options: Any) -> Model:
    # Options meant for other backends are ignored so one command line can switch backends.
    return ScriptedModel.from_file(path)
