"""Errors a sandbox user can act on: each says what was wrong and what to do."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class for every error raised by the sandbox layer."""


class SetupError(SandboxError):
    """The host lacks something the runtime needs (a program, a kernel feature, permissions)."""


class ImageNotFound(SandboxError):
    """The requested image has not been built."""


class InvalidArgument(SandboxError, ValueError):
    """An argument is out of range or of the wrong type; the message names it."""


class SandboxNotFound(SandboxError):
    """No sandbox with that id exists (it may have been closed or collected)."""


class SandboxClosed(SandboxError):
    """The sandbox (or session) was closed or died; create a new one."""


class ExecError(SandboxError):
    """A command could not be started inside the sandbox (not: it ran and failed)."""


class AccessDenied(SandboxError):
    """The sandbox server refused the token (missing, unknown, revoked, or not an admin's)."""


class QuotaExceeded(SandboxError):
    """One more sandbox would take the token over its quota (count or memory)."""


class InUse(SandboxError):
    """The thing cannot be removed while something uses it (a snapshot under a sandbox)."""


class TooLarge(SandboxError, ValueError):
    """A file, tree or request is bigger than the limit that applies; the message names both."""
