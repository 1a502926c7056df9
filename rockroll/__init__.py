"""rockroll: sandboxes, harness, trainer and benchmarks for LLM agents."""

from rockroll.sandbox.errors import (
    ImageNotFound,
    InvalidArgument,
    SandboxClosed,
    SandboxError,
    SetupError,
)
from rockroll.sandbox.sdk import AsyncSandbox, Sandbox, Snapshot
from rockroll.sandbox.session import Session
from rockroll.sandbox.types import ExecResult, FileInfo

__all__ = [
    "AsyncSandbox",
    "ExecResult",
    "FileInfo",
    "ImageNotFound",
    "InvalidArgument",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "Session",
    "SetupError",
    "Snapshot",
]
