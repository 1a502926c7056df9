"""Resource limits, freezing and reliable killing for one sandbox, on cgroup v1, v2 or hybrids.

Each sandbox gets one cgroup per hierarchy it uses, at ``<mount>/rockroll/<sandbox id>``. The
launcher writes its pid into every file of `CgroupSet.procs_files()` before exec'ing bwrap, so
every process of the sandbox (including ones that escape the pid namespace's reaping by
double-forking) stays countable, limited and killable.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.errors import InvalidArgument, SandboxError, SandboxNotFound, SetupError

PARENT = "rockroll"
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("cpu", "memory", "pids")  # freezing is core v2 (cgroup.freeze), not a controller
CPU_PERIOD_US = 100_000
MIN_MEMORY = 1 << 20
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_POLL_FIRST = 0.0005  # waits back off from 0.5 ms to 10 ms: most finish in well under 1 ms
_POLL_MAX = 0.01


@dataclass(frozen=True)
class Layout:
    """Where each controller lives: `v1` maps controller to its hierarchy's mount point."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None

    @classmethod
    def detect(cls, mountinfo: Path = Path("/proc/self/mountinfo")) -> Layout:
        """Read the cgroup mounts of this mount namespace."""
        v1: dict[str, Path] = {}
        v2: Path | None = None
        for line in mountinfo.read_text().splitlines():
            pre, _, post = line.partition(" - ")
            fields, post_fields = pre.split(), post.split()
            if len(fields) < 5 or len(post_fields) < 3:
                continue
            mount = Path(_unescape(fields[4]))
            fstype, superopts = post_fields[0], post_fields[2].split(",")
            if fstype == "cgroup2" and v2 is None:
                v2 = mount
            elif fstype == "cgroup":
                for ctrl in CONTROLLERS:
                    if ctrl in superopts:
                        v1.setdefault(ctrl, mount)
        return cls(v1=v1, v2=v2)

    def v2_available(self) -> frozenset[str]:
        """Controllers the v2 root offers (and that no v1 hierarchy has claimed)."""
        if self.v2 is None:
            return frozenset()
        try:
            offered = set((self.v2 / "cgroup.controllers").read_text().split())
        except OSError:
            return frozenset()
        return frozenset(offered - set(self.v1))

    def placement(self) -> dict[str, Path]:
        """Controller -> hierarchy root for each controller we can use on this host."""
        where = dict(self.v1)
        v2_ctrls = self.v2_available()
        if self.v2 is not None:
            for ctrl in V2_CONTROLLERS:
                if ctrl in v2_ctrls and ctrl not in where:
                    where[ctrl] = self.v2
            where.setdefault("freezer", self.v2)
        return where


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _check_id(sandbox_id: str) -> None:
    if not _ID_RE.match(sandbox_id):
        raise InvalidArgument(
            f"sandbox_id {sandbox_id!r} must be 1-128 characters of letters, digits, '_', '.', '-'"
        )


def _read(path: Path) -> str | None:
    """Contents, or None when the file or its cgroup is gone (removed cgroups give ENODEV)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:
            return None
        raise


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        hint = (
            "the controller is not enabled for this cgroup"
            if not path.exists()
            else "run as root with a read-write /sys/fs/cgroup"
        )
        raise SetupError(f"cannot write {value!r} to {path}: {e}; {hint}") from e


def _keyed(text: str | None, key: str) -> int | None:
    """Value of `key` in a flat-keyed cgroup file ("key value" lines)."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _enable_v2(cgroup: Path, controllers: list[str]) -> None:
    """Enable controllers for the children of `cgroup`, which must hold no processes itself."""
    current = set((_read(cgroup / "cgroup.subtree_control") or "").split())
    missing = [c for c in controllers if c not in current]
    if not missing:
        return
    path = cgroup / "cgroup.subtree_control"
    try:
        with open(path, "w") as f:
            f.write(" ".join(f"+{c}" for c in missing))
    except OSError as e:
        if e.errno == errno.EBUSY:
            why = (
                f"{cgroup} holds processes itself, and cgroup v2's 'no internal processes' rule "
                "forbids giving its children controllers then; move those processes into a leaf "
                f"cgroup first (e.g. mkdir {cgroup}/init and write their pids to its cgroup.procs)"
            )
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = "it is not writable: run as root with a read-write cgroup2 mount"
        else:
            why = f"check that {cgroup}/cgroup.controllers lists them"
        raise SetupError(f"cannot enable {', '.join(missing)} in {path} ({e}): {why}") from e


def _mkdir(path: Path) -> None:
    try:
        path.mkdir()
    except FileExistsError:
        raise
    except OSError as e:
        raise SetupError(
            f"cannot create cgroup {path} ({e}): run as root, with /sys/fs/cgroup mounted "
            "read-write (in a container: give it a private writable cgroup namespace)"
        ) from e


@dataclass
class CgroupSet:
    """The cgroups of one sandbox: controller name -> cgroup directory (shared on v2)."""

    sandbox_id: str
    dirs: dict[str, Path]
    v2_root: Path | None = None

    @classmethod
    def create(
        cls,
        sandbox_id: str,
        memory: int | None = None,
        pids: int | None = None,
        cpus: float | None = None,
        *,
        layout: Layout | None = None,
    ) -> CgroupSet:
        """Create the cgroups and write the limits (None: no limit for that resource)."""
        _check_id(sandbox_id)
        if memory is not None and (isinstance(memory, bool) or memory < MIN_MEMORY):
            raise InvalidArgument(f"memory must be at least {MIN_MEMORY} bytes, got {memory!r}")
        if pids is not None and (isinstance(pids, bool) or pids < 1):
            raise InvalidArgument(f"pids must be a positive integer, got {pids!r}")
        if cpus is not None and not cpus * CPU_PERIOD_US >= 1000:
            raise InvalidArgument(f"cpus must be at least 0.01, got {cpus!r}")
        layout = layout or host_layout()
        where = layout.placement()
        wanted = {"memory": memory, "pids": pids, "cpu": cpus, "freezer": True}
        for ctrl, limit in wanted.items():
            if limit is not None and ctrl not in where:
                raise SetupError(
                    f"the {ctrl} cgroup controller is not available (no v1 hierarchy carries it "
                    "and the cgroup v2 root does not offer it): enable it in the kernel/boot "
                    "options, or mount its cgroup hierarchy"
                )
        cg = cls(sandbox_id, {}, layout.v2)
        v2_ctrls = sorted(c for c, root in where.items() if root == layout.v2 and c != "freezer")
        try:
            roots: dict[Path, Path] = {}
            for ctrl, root in sorted(where.items()):
                if root not in roots:
                    parent = root / PARENT
                    if root == layout.v2:
                        _enable_v2(root, v2_ctrls)
                    with contextlib.suppress(FileExistsError):
                        _mkdir(parent)
                    if root == layout.v2:
                        _enable_v2(parent, v2_ctrls)
                    try:
                        _mkdir(parent / sandbox_id)
                    except FileExistsError:
                        raise InvalidArgument(
                            f"cgroups for sandbox {sandbox_id!r} already exist; attach() and "
                            "destroy() them, or use a fresh id"
                        ) from None
                    roots[root] = parent / sandbox_id
                cg.dirs[ctrl] = roots[root]
            cg.set_limits(memory, pids, cpus)
        except BaseException:
            cg._rmdirs()
            raise
        return cg

    @classmethod
    def attach(cls, sandbox_id: str, *, layout: Layout | None = None) -> CgroupSet:
        """Rebuild the object for cgroups created earlier (by this or another process)."""
        _check_id(sandbox_id)
        layout = layout or host_layout()
        dirs = {
            ctrl: root / PARENT / sandbox_id
            for ctrl, root in layout.placement().items()
            if (root / PARENT / sandbox_id).is_dir()
        }
        if not dirs:
            raise SandboxNotFound(f"no cgroups exist for sandbox {sandbox_id!r}")
        return cls(sandbox_id, dirs, layout.v2)

    def _is_v2(self, ctrl: str) -> bool:
        return self._in_v2(self.dirs[ctrl])

    def _in_v2(self, path: Path) -> bool:
        return self.v2_root is not None and path.is_relative_to(self.v2_root)

    def set_limits(self, memory: int | None, pids: int | None, cpus: float | None) -> None:
        """Write limits (None leaves that resource as it is); may be called on live cgroups."""
        if memory is not None:
            d = self.dirs["memory"]
            if self._is_v2("memory"):
                _write(d / "memory.max", str(memory))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
            else:
                # memsw may never be below the plain limit: when the limit goes down it goes
                # first, when it goes up memsw goes first.
                files = ["memory.limit_in_bytes"]
                if (d / "memory.memsw.limit_in_bytes").exists():
                    current = int(_read(d / "memory.limit_in_bytes") or 0)
                    files.insert(0 if memory > current else 1, "memory.memsw.limit_in_bytes")
                for name in files:
                    _write(d / name, str(memory))
        if pids is not None:
            _write(self.dirs["pids"] / "pids.max", str(pids))
        if cpus is not None:
            d, quota = self.dirs["cpu"], int(cpus * CPU_PERIOD_US)
            if self._is_v2("cpu"):
                _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(d / "cpu.cfs_quota_us", str(quota))

    def _unique_dirs(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    def procs_files(self) -> list[str]:
        """Every cgroup.procs the launcher must write its pid into before exec'ing the sandbox."""
        return [str(d / "cgroup.procs") for d in self._unique_dirs()]

    def pids(self) -> list[int]:
        """Pids of every live process in the sandbox's cgroups."""
        found: set[int] = set()
        for d in self._unique_dirs():
            found.update(int(p) for p in (_read(d / "cgroup.procs") or "").split())
        return sorted(found)

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        for pause in _backoff():
            if done():
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox {self.sandbox_id!r}: {what} within {timeout}s")
            time.sleep(pause)

    def _freezer(self) -> Path:
        if "freezer" not in self.dirs:
            raise SetupError(
                f"sandbox {self.sandbox_id!r} has no freezer cgroup: mount the v1 freezer "
                "hierarchy or use a kernel with cgroup v2 (5.2+)"
            )
        return self.dirs["freezer"]

    def _freezer_state(self) -> str | None:
        """'FROZEN', 'FREEZING', 'THAWED', or None when the cgroup is gone."""
        d = self._freezer()
        if self._is_v2("freezer"):
            frozen = _keyed(_read(d / "cgroup.events"), "frozen")
            want = (_read(d / "cgroup.freeze") or "0").strip() == "1"
            if frozen is None:
                return None
            if frozen:
                return "FROZEN"
            return "FREEZING" if want else "THAWED"
        state = _read(d / "freezer.state")
        return state.strip() if state is not None else None

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        d = self._freezer()
        target = "FROZEN" if frozen else "THAWED"
        if self._is_v2("freezer"):
            _write(d / "cgroup.freeze", "1" if frozen else "0")
        else:
            _write(d / "freezer.state", target)
        self._wait(
            lambda: self._freezer_state() in (target, None), timeout, f"not {target.lower()}"
        )

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process in place (for a consistent snapshot); undo with thaw()."""
        try:
            self._set_frozen(True, timeout)
        except SetupError:
            raise
        except SandboxError:  # timed out: do not leave it half frozen
            self._set_frozen(False, timeout)
            raise

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen(False, timeout)

    def kill_all(self, timeout: float = 2.0) -> bool:
        """SIGKILL every process of the sandbox; True once none is left within `timeout`."""
        deadline = time.monotonic() + timeout
        for d in self._unique_dirs():
            if self._in_v2(d) and (d / "cgroup.kill").exists():
                with contextlib.suppress(SetupError):  # raced with removal
                    _write(d / "cgroup.kill", "1")
        if "freezer" in self.dirs and not self._is_v2("freezer"):
            # Freezing stops forks while we signal; the kills land at thaw. v1 tasks that stay
            # frozen can never die, so thaw unconditionally.
            with contextlib.suppress(SandboxError):
                self._set_frozen(True, timeout / 4)
            self._signal_all()
            with contextlib.suppress(SandboxError):
                self._set_frozen(False, max(deadline - time.monotonic(), 0.1))
        for pause in _backoff():
            if not self._signal_all():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
        return False

    def _signal_all(self) -> int:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def destroy(self, timeout: float = 2.0) -> None:
        """Kill everything and remove the cgroups; already removed ones are fine."""
        if not self.kill_all(timeout):
            raise SandboxError(
                f"sandbox {self.sandbox_id!r}: processes {self.pids()} survived SIGKILL "
                f"for {timeout}s (stuck in uninterruptible sleep?); its cgroups were kept"
            )
        deadline = time.monotonic() + timeout
        for pause in _backoff():
            try:
                self._rmdirs()
                return
            except OSError as e:
                # A killed task may take a moment to leave the cgroup after it is reaped.
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise SandboxError(f"cannot remove cgroup: {e}") from e
                time.sleep(pause)

    def _rmdirs(self) -> None:
        for d in self._unique_dirs():
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()

    def memory_usage(self) -> int | None:
        """Bytes charged to the sandbox now, or None without a memory controller."""
        d = self.dirs.get("memory")
        if d is None:
            return None
        text = _read(d / ("memory.current" if self._is_v2("memory") else "memory.usage_in_bytes"))
        return int(text) if text else None

    def oom_kill_count(self) -> int | None:
        """Processes the kernel OOM-killed for exceeding the limit (None: not reported)."""
        d = self.dirs.get("memory")
        if d is None:
            return None
        name = "memory.events" if self._is_v2("memory") else "memory.oom_control"
        return _keyed(_read(d / name), "oom_kill")

    def oom_killed(self) -> bool:
        return bool(self.oom_kill_count())


def _backoff() -> Iterator[float]:
    pause = _POLL_FIRST
    while True:
        yield pause
        pause = min(pause * 2, _POLL_MAX)


@functools.cache
def host_layout() -> Layout:
    """This host's layout, read once: parsing mountinfo costs milliseconds with many mounts."""
    return Layout.detect()


def existing_sandbox_ids(*, layout: Layout | None = None) -> set[str]:
    """Ids of all sandboxes that have cgroups on this host, for garbage collection."""
    layout = layout or host_layout()
    ids: set[str] = set()
    for root in set(layout.placement().values()):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            ids.update(p.name for p in (root / PARENT).iterdir() if p.is_dir())
    return ids
