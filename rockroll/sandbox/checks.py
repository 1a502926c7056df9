"""Checks of the arguments every `Sandbox` takes, local or remote: one message per bad value."""

from __future__ import annotations

from rockroll.errors import InvalidArgument

MAX_TIMEOUT = 7 * 86400.0  # a week: beyond it, say None


def check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise InvalidArgument(
            f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}] or None (no limit), "
            f"got {timeout!r}"
        )


def check_cap(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a number of bytes >= 0 or None, got {value!r}")
    return value


def check_env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise InvalidArgument(f"env must be a dict of str to str, got {env!r}")
    return env
