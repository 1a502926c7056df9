"""The backend a sandbox's spec names (bwrap or podman), loaded on first use."""

from __future__ import annotations

from rockroll.errors import InvalidArgument
from rockroll.sandbox.backend import Backend


def backend_for(name: str) -> Backend:
    if name == "bwrap":
        from rockroll.sandbox.bwrap import BwrapBackend

        return BwrapBackend()
    if name == "podman":
        from rockroll.sandbox.podman import PodmanBackend

        return PodmanBackend()
    raise InvalidArgument(f"backend {name!r} is unknown; use 'bwrap' or 'podman'")
