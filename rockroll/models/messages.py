"""What flows between the loop, the model and the tools: chat messages and completions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """A call the model asked for. `arguments` is already parsed JSON."""

    id: str
    name: str
    arguments: dict = Field(default_factory=dict)


class Message(BaseModel):
    """One chat message, in the OpenAI chat-completions shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict:
        out: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _json(c.arguments)},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


class Completion(BaseModel):
    """A model's answer: the assistant message plus what the trainer needs from local models.

    `token_ids` and `logprobs` are the generated tokens exactly as sampled (no re-tokenization);
    `prompt_token_ids` is what the model saw. Remote models leave them empty.
    """

    message: Message
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = Field(
        None, description="per generated token, the most likely (token id, logprob), if asked"
    )
    raw: str | None = Field(None, description="the model's text before tool calls were parsed")
    forced: bool = Field(
        False, description="imposed, not sampled (an expert prefix a rollout restarts from)"
    )
    weights_version: int | None = Field(
        None, description="a local policy's version (updates applied) whose weights sampled it"
    )


def _json(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
