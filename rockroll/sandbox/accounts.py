"""Users inside a sandbox: `user="app"`, `"1000"` or `"app:staff"` to the ids a command runs as.

Names are looked up in the sandbox's own /etc/passwd and /etc/group (read by the host, confined
to the sandbox), as `docker exec -u` and a Dockerfile `USER` do: the primary group comes from
passwd unless a group is named, supplementary groups from /etc/group, and a numeric uid with no
passwd entry runs with gid 0 and HOME=/.
"""

from __future__ import annotations

from dataclasses import dataclass

from rockroll.errors import InvalidArgument
from rockroll.sandbox.files import RootFS
from rockroll.sandbox.protocol import User

MAX_ID = 65535  # ids a sandbox's user namespace maps
_ROOT = ("", "root", "0", "root:root", "0:0")


@dataclass(frozen=True)
class Account:
    user: User
    home: str


def default_user(user: object) -> str | None:
    """A Dockerfile `USER` as a sandbox's default user: the name as given, or None for root
    (and for no USER at all), which is what a sandbox runs as without one."""
    if not isinstance(user, str) or user.strip() in _ROOT:
        return None
    return user.strip()


def resolve(fs: RootFS, spec: str | int) -> Account:
    """The ids and home of `spec` in the sandbox whose files `fs` reaches."""
    text = str(spec).strip()
    name, _, group = text.partition(":")
    if not name:
        raise InvalidArgument(f"user {spec!r} must be a name or uid, optionally :group")
    passwd = _table(fs, "/etc/passwd")
    groups = _table(fs, "/etc/group")
    entry = next((e for e in passwd if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in passwd if e[2] == name), None)
    if entry is None:
        if not name.isdigit():
            raise InvalidArgument(f"user {name!r} is not in the sandbox's /etc/passwd")
        uid, gid, home, login = int(name), 0, "/", None
    else:
        uid, gid, home, login = _id(entry[2], name), _id(entry[3], name), entry[5] or "/", entry[0]
    if group:
        found = next((g for g in groups if g[0] == group or g[2] == group), None)
        if found is None and not group.isdigit():
            raise InvalidArgument(f"group {group!r} is not in the sandbox's /etc/group")
        gid = _id(found[2] if found else group, group)
    extra = tuple(
        sorted(
            {_id(g[2], g[0]) for g in groups if login and login in g[3].split(",") and len(g) > 3}
        )
    )
    if uid > MAX_ID or gid > MAX_ID:
        raise InvalidArgument(f"user {spec!r}: ids above {MAX_ID} do not exist in a sandbox")
    return Account(User(uid, gid, tuple(g for g in extra if g <= MAX_ID) or (gid,)), home)


def _table(fs: RootFS, path: str) -> list[list[str]]:
    try:
        text = fs.read_bytes(path, 16 << 20).decode(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            rows.append(fields + [""] * (7 - len(fields)))
    return rows


def _id(value: str, what: str) -> int:
    if not value.isdigit():
        raise InvalidArgument(f"{what!r} has no numeric id in the sandbox's account files")
    return int(value)
