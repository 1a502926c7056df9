"""The one protocol every runtime backend implements.

The runtime prepares what all backends share (the record, the directories) and talks to the
sandbox's init over its socket; a backend makes the sandbox's disk (`disk.new_disk`), mounts the
root, starts, freezes and stops the isolated processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from rockroll.sandbox.records import SandboxRecord


class Backend(ABC):
    """Starts and stops isolated processes around an already mounted root filesystem."""

    name: str

    @abstractmethod
    def check(self) -> None:
        """Raise SetupError naming what to install or change when this backend cannot run."""

    @abstractmethod
    def launch(self, rec: SandboxRecord) -> int:
        """Mount `rec`'s root (its layers and its writable layer, made by the runtime) and start
        its init, listening on `rec.sock`; return a host pid."""

    def set_limits(self, rec: SandboxRecord) -> None:
        """Apply `rec.spec`'s limits to a running sandbox (used to adopt a warm one)."""
        raise NotImplementedError(f"the {self.name} backend cannot change limits of a sandbox")

    def wait_ready(self, rec: SandboxRecord) -> None:  # noqa: B027 (optional hook)
        """Block until the init started by `launch` serves; lets the runtime work meanwhile."""

    @abstractmethod
    def root(self, rec: SandboxRecord) -> str:
        """A host path at which the sandbox's root filesystem can be read and written."""

    @abstractmethod
    def upper(self, rec: SandboxRecord) -> str:
        """A host path of the sandbox's writable layer as stored (ids not shifted), to copy."""

    @abstractmethod
    def destroy(self, rec: SandboxRecord) -> None:
        """Kill every process of the sandbox and free backend resources; idempotent."""

    @abstractmethod
    def running(self, rec: SandboxRecord) -> bool:
        """Whether the sandbox's processes are still there."""

    @abstractmethod
    def freeze(self, rec: SandboxRecord) -> None:
        """Stop the sandbox's processes so its files can be copied consistently."""

    @abstractmethod
    def thaw(self, rec: SandboxRecord) -> None:
        """Let the processes run again after `freeze`."""

    def leftovers(self, known: set[str]) -> list[str]:
        """Resources (cgroups, containers) of sandboxes not in `known`; removed by gc."""
        return []

    def remove_leftover(self, name: str) -> None:  # noqa: B027 (optional hook)
        """Remove one resource reported by `leftovers`."""
