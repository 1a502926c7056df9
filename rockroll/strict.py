"""The base of every pydantic model a user or a client writes: unknown keys are refused, and a
value set later is checked as one given at first (configs, HTTP bodies)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A pydantic model that refuses unknown fields and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
