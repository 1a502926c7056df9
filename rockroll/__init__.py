"""rockroll: sandboxes, harness, trainer and benchmarks for LLM agents."""

from rockroll.errors import (
    AccessDenied,
    ImageNotFound,
    InvalidArgument,
    QuotaExceeded,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
    SetupError,
)
from rockroll.sandbox.sdk import AsyncSandbox, Sandbox, Snapshot
from rockroll.sandbox.session import Session
from rockroll.sandbox.types import ExecResult, FileInfo

__all__ = [
    "AccessDenied",
    "AsyncSandbox",
    "ExecResult",
    "FileInfo",
    "ImageNotFound",
    "InvalidArgument",
    "QuotaExceeded",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "SandboxNotFound",
    "Session",
    "SetupError",
    "Snapshot",
]
