"""What a Compose service's `volumes` become in rockroll's sandboxes, which share no filesystem.

- A bind mount of a file or folder of the task's own (`./seed.sql:/docker-entrypoint-initdb.d/
  seed.sql`, inside the Compose file's folder) is copied into the sandbox before the service
  starts. It is a copy, not a live mount: what the service writes there stays in its sandbox.
- A named or anonymous volume that one service uses is a directory of that sandbox, as fresh
  as a new volume with the image's files in it, which is what Docker gives.
- A named volume that several services share cannot be, and the task is refused saying so.
- A host path outside the Compose file's folder, and the harness's own mounts (sources with
  `${VAR}`, such as Terminal-Bench's log folders), are not mounted; the start log names each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rockroll.errors import TaskError

# Compose keys that ask for more of the host than a sandbox gives; the start log names them.
NOT_GRANTED = ("cap_add", "privileged", "devices", "sysctls", "pid", "ipc", "network_mode")


@dataclass
class Mounts:
    """A service's volumes, read: files to copy in (sandbox path -> host path), the named
    volumes it uses, and what is not done (each a line for the log)."""

    files: dict[str, Path] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_mounts(spec: dict, compose: Path, where: str, task_id: str) -> Mounts:
    """The `volumes` of one Compose service, and the keys of it that are not granted."""
    out = Mounts()
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        raise TaskError(task_id, "invalid-task", f"{where}.volumes must be a list")
    folder = compose.parent.resolve()
    for item in volumes:
        kind, source, target = _volume(item, where, task_id)
        if kind == "volume" and source:
            out.named.append(source)
        elif kind != "bind":
            continue  # anonymous volumes and tmpfs: the sandbox's own directories
        elif "$" in source:
            out.skipped.append(f"volume {_text(item)} is the harness's own; not mounted")
        else:
            path = (folder / Path(source).expanduser()).resolve()
            if not path.is_relative_to(folder) or not path.exists():
                out.skipped.append(
                    f"volume {source}:{target}: not a path inside {folder}; not mounted"
                )
            else:
                out.files[target] = path
    out.skipped += [
        f"{key} is not granted (a sandbox keeps its own limits)"
        for key in NOT_GRANTED
        if key in spec
    ]
    return out


def _text(item: object) -> str:
    return item if isinstance(item, str) else f"{item.get('source')}:{item.get('target')}"  # type: ignore[union-attr]


def _volume(item: object, where: str, task_id: str) -> tuple[str, str, str]:
    """(kind, source, target) of a short (`SRC:DST[:MODE]`, `DST`) or long volume entry."""
    if isinstance(item, dict):
        kind = str(item.get("type", "volume"))
        source, target = str(item.get("source") or ""), str(item.get("target") or "")
    elif isinstance(item, str):
        parts = item.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
    else:
        raise TaskError(task_id, "invalid-task", f"{where}.volumes: {item!r} is not a volume")
    if "$" in source + target:  # the harness's own (Terminal-Bench's log folders)
        return "bind", source + target, target
    if not target.startswith("/"):
        raise TaskError(task_id, "invalid-task", f"{where}.volumes: {item!r} needs a target path")
    return kind, source, target


def check_shared(uses: dict[str, list[str]], compose: Path, task_id: str) -> None:
    """Refuse a task whose services share a named volume (`uses`: service -> its volumes)."""
    owners: dict[str, list[str]] = {}
    for service, names in uses.items():
        for name in set(names):
            owners.setdefault(name, []).append(service)
    for name, services in owners.items():
        if len(services) > 1:
            raise TaskError(
                task_id,
                "sandbox-error",
                f"{compose}: services {', '.join(sorted(services))} share the named volume "
                f"{name}; each sandbox has a filesystem of its own, so this task cannot run as "
                "under Compose",
            )
