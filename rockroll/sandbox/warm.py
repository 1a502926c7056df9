"""Started, never used sandboxes kept ready, so that `create` only adopts one."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable

from rockroll.errors import SandboxError
from rockroll.sandbox.records import SandboxRecord
from rockroll.sandbox.spec import SandboxSpec

REFILL_DELAY = 0.005  # let a just-adopted sandbox's first commands run before starting another
Key = tuple[str, str, int | None, int | None, bool, str]
Started = tuple[SandboxRecord, int]  # a sandbox's record and its owner lock's fd


def warm_key(spec: SandboxSpec) -> Key:
    """What must match for a warm sandbox to be adopted: image, network, disk, inodes, and
    the monitor's settings (its supervisor got them at start)."""
    rules = json.dumps(spec.rules, sort_keys=True) if spec.rules else ""
    network = spec.network if isinstance(spec.network, str) else json.dumps(spec.network)
    return (spec.image, network, spec.disk, spec.inodes, spec.monitor, rules)


class WarmPool:
    """Started, never used sandboxes per `warm_key`, so `create` only adopts one.

    A key is kept warm once a process has created two sandboxes of it (a process that makes
    one sandbox gains nothing); a background thread refills it with `start(spec)` and ends
    what is left with `discard(record)`. Only the bwrap backend, whose start-up flags depend on
    nothing but the image, the network mode and the disk, is pooled. `size` sandboxes per key
    (0: off, as a benchmark of cold starts sets it).
    """

    def __init__(
        self,
        start: Callable[[SandboxSpec], Started],
        discard: Callable[[SandboxRecord], None],
        size: int,
    ) -> None:
        self.start = start
        self.discard = discard
        self.size = size
        self.asked: dict[Key, int] = {}
        self.ready: dict[Key, list[Started]] = {}
        self.specs: dict[Key, SandboxSpec] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = False

    def take(self, spec: SandboxSpec) -> Started | None:
        if self.size <= 0 or spec.backend != "bwrap" or spec.image.startswith("snap-"):
            return None
        if spec.profile != "agent":
            return None
        key = warm_key(spec)
        with self.cond:
            self.asked[key] = self.asked.get(key, 0) + 1
            if self.asked[key] < 2:
                return None
            self.specs.setdefault(key, spec.model_copy(update={"detached": False, "ttl": None}))
            if self.thread is None:
                self.thread = threading.Thread(target=self._fill, name="rockroll-warm", daemon=True)
                self.thread.start()
                atexit.register(self.close)
            items = self.ready.setdefault(key, [])
            warm = items.pop() if items else None
            self.cond.notify_all()
        return warm

    def ready_ids(self, spec: SandboxSpec) -> list[str]:
        """Ids of the warm sandboxes waiting for a spec like this one."""
        with self.cond:
            return [rec.id for rec, _ in self.ready.get(warm_key(spec), [])]

    def _wanted(self) -> Key | None:
        for key, items in self.ready.items():
            if len(items) < self.size:
                return key
        return None

    def _fill(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (key := self._wanted()) is None:
                    self.cond.wait()
                if self.closed:
                    return
                spec = self.specs[key]
            time.sleep(REFILL_DELAY)
            try:
                warm = self.start(spec)
            except Exception:
                time.sleep(1.0)
                continue
            with self.cond:
                if not self.closed:
                    self.ready[key].append(warm)
                    continue
            self._discard(warm)

    def _discard(self, warm: Started) -> None:
        rec, lock_fd = warm
        with contextlib.suppress(SandboxError, OSError):
            self.discard(rec)
        os.close(lock_fd)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            items = [w for ws in self.ready.values() for w in ws]
            self.ready.clear()
            self.cond.notify_all()
        for warm in items:
            self._discard(warm)
