"""Every error rockroll raises for a caller to act on, under one root.

Each class carries the `code` and HTTP `status` it has on the wire, so the service answers with
them and the SDK turns an error body back into the same class: the table exists once, here.
The CLI catches `RockrollError` and prints its message as one line; anything else is a bug.
"""

from __future__ import annotations

from typing import ClassVar


class RockrollError(Exception):
    """Root of rockroll's errors; the message says what was wrong and what would fix it."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500


class UsageError(RockrollError, ValueError):
    """A command line, argument or file the user gave cannot be used; the message names it."""

    code = "invalid_argument"
    status = 400


class ConfigError(UsageError):
    """A configuration that cannot be used; the message names the key and what would fix it."""

    code = "invalid_config"


# -- sandboxes -------------------------------------------------------------------------------


class SandboxError(RockrollError):
    """Base class for every error raised by the sandbox layer."""

    code = "sandbox_error"


class SetupError(SandboxError):
    """The host lacks something the runtime needs (a program, a kernel feature, permissions)."""

    code = "setup_error"


class ImageNotFound(SandboxError):
    """The requested image has not been built."""

    code = "image_not_found"
    status = 404


class InvalidArgument(SandboxError, UsageError):
    """An argument is out of range or of the wrong type; the message names it."""

    code = "invalid_argument"
    status = 400


class SandboxNotFound(SandboxError):
    """No sandbox with that id exists (it may have been closed or collected)."""

    code = "not_found"
    status = 404


class SandboxClosed(SandboxError):
    """The sandbox (or session) was closed or died; create a new one."""

    code = "gone"
    status = 410


class ExecError(SandboxError):
    """A command could not be started inside the sandbox (not: it ran and failed)."""

    code = "exec_error"
    status = 400


class AccessDenied(SandboxError):
    """The sandbox server refused the token (missing, unknown, revoked, or not an admin's)."""

    code = "forbidden"
    status = 403


class QuotaExceeded(SandboxError):
    """One more sandbox would take the token over its quota (count or memory)."""

    code = "quota_exceeded"
    status = 403


class InUse(SandboxError):
    """The thing cannot be removed while something uses it (a snapshot under a sandbox)."""

    code = "conflict"
    status = 409


class TooLarge(SandboxError, ValueError):
    """A file, tree or request is bigger than the limit that applies; the message names both."""

    code = "too_large"
    status = 413


# -- models and tasks --------------------------------------------------------------------------


class ModelError(RockrollError):
    """A backend could not produce a completion; the message says what to check."""

    code = "model_error"
    status = 502


class TaskError(RockrollError):
    """A task could not be loaded, built or run; the message names the task and the cause."""

    code = "task_error"
    status = 400

    def __init__(self, task_id: str, reason: str, message: str) -> None:
        super().__init__(f"{task_id}: {message}")
        self.task_id = task_id
        self.reason = reason


# -- the wire ----------------------------------------------------------------------------------

# Python's own errors that the sandbox layer lets through, with their code and status.
_BUILTIN: tuple[tuple[type[Exception], int, str], ...] = (
    (FileNotFoundError, 404, "no_such_file"),
    (IsADirectoryError, 400, "is_a_directory"),
    (NotADirectoryError, 400, "not_a_directory"),
    (PermissionError, 403, "forbidden"),
)
# Codes the server also sends, answered by the class that means the same to a caller.
_ALIASES = {
    "validation_error": InvalidArgument,
    "invalid_json": InvalidArgument,
    "unauthorized": AccessDenied,
}


def wire(exc: BaseException) -> tuple[int, str, str] | None:
    """(HTTP status, code, message) for an error a caller should see, or None for a bug."""
    if isinstance(exc, RockrollError):
        return exc.status, exc.code, str(exc)
    for kind, status, code in _BUILTIN:
        if isinstance(exc, kind):
            return status, code, str(exc)
    return None


def _defined_codes(root: type[RockrollError]) -> dict[str, type[Exception]]:
    table: dict[str, type[Exception]] = {}
    for kind in root.__subclasses__():
        if "code" in vars(kind):
            table.setdefault(kind.code, kind)
        for code, sub in _defined_codes(kind).items():
            table.setdefault(code, sub)
    return table


def from_wire(code: str, default: type[Exception] = SandboxError) -> type[Exception]:
    """The class a client raises for an error body with this code."""
    if code in _ALIASES:
        return _ALIASES[code]
    for kind, _, known in _BUILTIN:
        if code == known and kind is not PermissionError:
            return kind
    # The caller's own family first: "invalid_argument" from a sandbox server is InvalidArgument.
    family = default if isinstance(default, type) and issubclass(default, RockrollError) else None
    if family is not None and code in (found := _defined_codes(family)):
        return found[code]
    return _defined_codes(RockrollError).get(code, default)
