"""The requests the model server takes (OpenAI's chat and text completions), as far as it
honours them.

A field it does not honour is refused with a 400 that names it, rather than ignored: a client
that asks for something must not get something else silently. `IGNORED` fields, and `NEUTRAL`
ones at their neutral value, pass.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CHOICES = 16

IGNORED = {"user", "metadata", "store", "parallel_tool_calls", "stream_options", "service_tier"}
"""Request fields that change nothing here (bookkeeping, or what this server always does)."""

NEUTRAL = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None}
"""Sampling fields accepted at their neutral value only; any other value is refused by name."""


class SamplingRequest(BaseModel):
    """What both kinds of request share: the model, how to sample, and when to stop."""

    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> str | None:
        """The first field sent that this server does not honour, if any."""
        for name, value in (self.model_extra or {}).items():
            if name in IGNORED or (name in NEUTRAL and value in (NEUTRAL[name], None, {})):
                continue
            return name
        return None


class ChatRequest(SamplingRequest):
    """`POST /v1/chat/completions`."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class TextRequest(SamplingRequest):
    """`POST /v1/completions`: a plain continuation of a prompt (text, or token ids exactly)."""

    prompt: str | list[int]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
