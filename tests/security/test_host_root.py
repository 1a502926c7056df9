"""Root inside is not root outside: no /proc/sys write, no core_pattern helper, no host uid 0."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from rockroll import Sandbox
from rockroll.sandbox.cgroups import CgroupSet
from rockroll.sandbox.idmap import id_base
from rockroll.sandbox.paths import rockroll_home

# The one-line escape: a core dump handed to a program the sandbox planted, run as host root.
CORE_PATTERN_ATTACK = (
    "printf '#!/bin/sh\\nid > /tmp/PWNED\\n' > /tmp/x; chmod +x /tmp/x; "
    "echo '|/proc/%P/root/tmp/x' > /proc/sys/kernel/core_pattern; sh -c 'kill -SEGV $$'"
)

# Opens (never writes) every file under /proc/sys for writing; prints what each open said.
SYSCTL_WRITES = r"""
import errno, json, os
seen = {}
for top, dirs, files in os.walk("/proc/sys"):
    for name in files:
        path = os.path.join(top, name)
        try:
            os.close(os.open(path, os.O_WRONLY))
            seen[path] = "opened"
        except OSError as e:
            seen[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(seen))
"""


def test_core_pattern_escape_fails(sb: Sandbox) -> None:
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    res = sb.exec(CORE_PATTERN_ATTACK)
    assert "Read-only file system" in res.stderr, res
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert not Path("/tmp/PWNED").exists()
    assert not sb.exists("/tmp/PWNED")


def test_no_file_under_proc_sys_opens_for_writing(sb: Sandbox) -> None:
    res = sb.exec(["python3", "-c", SYSCTL_WRITES], timeout=60)
    seen = json.loads(res.stdout)
    assert len(seen) > 500, "the walk did not see /proc/sys"
    opened = sorted(p for p, how in seen.items() if how == "opened")
    assert opened == [], opened
    assert set(seen.values()) <= {"EROFS", "EACCES", "EPERM", "EINVAL"}


# runc's readonlyPaths and maskedPaths (the ones this kernel may have), written out here
RUNC_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
RUNC_MASKED_FILES = (
    "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/kallsyms",
    "/proc/interrupts", "/proc/latency_stats", "/proc/timer_stats",
)  # fmt: skip


def test_proc_entries_are_read_only_or_masked_like_runc(sb: Sandbox) -> None:
    mounts = {}
    for line in sb.exec("cat /proc/self/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")  # mount point -> per-mount options
    readonly = [p for p in RUNC_READONLY if Path(p).exists()]  # on this host's kernel
    assert "/proc/sys" in readonly
    for path in readonly:
        assert path in mounts and "ro" in mounts[path], (path, mounts.get(path))
    res = sb.exec("echo x > /proc/sys/kernel/hostname")  # one write, as root inside
    assert "Read-only file system" in res.stderr, res
    probe = r"""
import json, sys
out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        out[path] = len(f.read(4096))
print(json.dumps(out))
"""
    masked = [p for p in RUNC_MASKED_FILES if Path(p).exists()]
    for path in ("/proc/interrupts", "/proc/kallsyms"):  # the control: not empty on the host
        assert path in masked and Path(path).read_bytes()[:4096], path
    out = json.loads(sb.exec(["python3", "-c", probe, *masked]).stdout)
    assert out == dict.fromkeys(masked, 0), out


def test_mountinfo_shows_no_host_path_of_ours(sb: Sandbox) -> None:
    text = sb.exec("cat /proc/self/mountinfo").stdout
    for secret in (str(rockroll_home()), sb.id, "/root/.cache", "/run/rockroll", "/var/lib"):
        assert secret not in text, (secret, text)
    root = next(line for line in text.splitlines() if line.split()[4] == "/")
    assert "lowerdir=0" in root and "upperdir=u/upper" in root, root


def test_sandbox_root_is_an_unprivileged_host_id(sb: Sandbox) -> None:
    # the README's default, or what ROCKROLL_ID_BASE says: not taken from the code under test
    base = int(os.environ.get("ROCKROLL_ID_BASE") or 1_000_000_000)
    assert id_base() == base
    inside, outside, count = map(int, sb.exec("cat /proc/self/uid_map").stdout.split())
    assert (inside, outside, count) == (0, base, 65536)
    assert sb.exec("cat /proc/self/gid_map").stdout.split() == ["0", str(base), "65536"]
    # no user or group of the host has an id of the range
    for table in ("/etc/passwd", "/etc/group"):
        ids = [int(line.split(":")[2]) for line in Path(table).read_text().splitlines() if line]
        assert not [i for i in ids if base <= i < base + 65536], table
    sb.exec("sleep 30 & sleep 30 & true")
    # seen from the host, every process of the sandbox runs as an id of the range
    pids = CgroupSet.attach(str(sb.record.cgroup)).pids()
    seen = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
        seen.update(int(v) for v in line.split()[1:])
    assert seen and min(seen) >= base and max(seen) < base + 65536, seen


def test_several_users_work_inside(sb: Sandbox) -> None:
    res = sb.exec(
        "groupadd staff2 && useradd -m -G staff2 alice && su alice -c id && "
        "su nobody -s /bin/sh -c id && setpriv --reuid=1000 --regid=1000 --clear-groups id -u"
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("uid=1000(alice)") and "staff2" in lines[0]
    assert lines[1].startswith("uid=65534(nobody)")
    assert lines[2] == "1000"
    assert sb.exec("id -u", user="alice").stdout == "1000\n"
    assert sb.exec("echo $HOME", user="alice").stdout == "/home/alice\n"


def test_apt_drops_to_its_sandbox_user(sb: Sandbox) -> None:
    """apt runs its download methods as _apt (setgroups, setresgid, setresuid): with a local
    repository, no network is touched and every privilege drop must succeed."""
    sb.exec(
        "mkdir -p /srv/repo && echo 'deb [trusted=yes] file:/srv/repo ./' > "
        "/etc/apt/sources.list && rm -rf /etc/apt/sources.list.d/*"
    )
    res = sb.exec("apt-get update 2>&1")
    assert "seteuid" not in res.stdout and "setgroups" not in res.stdout, res.stdout
    assert "Operation not permitted" not in res.stdout, res.stdout
    assert "Get:1 file:/srv/repo" in res.stdout, res.stdout  # the method ran, as _apt
    # the control: where the drop cannot be made (no CAP_SETUID/CAP_SETGID), apt says so in
    # the words the checks above look for
    no_drop = "setpriv --inh-caps=-setuid,-setgid --bounding-set=-setuid,-setgid"
    res = sb.exec(f"{no_drop} apt-get update 2>&1")
    assert "setgroups" in res.stdout and "Operation not permitted" in res.stdout, res.stdout


def test_a_hostile_dockerfile_run_step_stays_unprivileged(tmp_path: Path, base_image: str) -> None:
    from rockroll.sandbox.dockerfile import BuildError, build

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"FROM {base_image}\n"
        f"RUN echo {os.urandom(4).hex()} > /dev/null && cat /proc/self/uid_map > /uidmap\n"
        "RUN useradd -m app\n"
        "USER app\n"
        "RUN id -u > /home/app/uid && touch /home/app/mine\n"
    )
    image = build(dockerfile)
    assert (image.rootfs / "uidmap").read_text().split() == ["0", str(id_base()), "65536"]
    assert (image.rootfs / "home/app/uid").read_text() == "1000\n"
    assert (image.rootfs / "home/app/mine").stat().st_uid == 1000  # stored as inside
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN echo '|/tmp/x' > /proc/sys/kernel/core_pattern\n"
    )
    try:
        build(hostile / "Dockerfile")
    except BuildError as exc:
        assert "Read-only file system" in str(exc)
    else:
        raise AssertionError("a RUN step wrote /proc/sys/kernel/core_pattern")
    assert not Path("/proc/sys/kernel/core_pattern").read_text().startswith("|/tmp/x")


def test_errno_of_the_audit_socket_is_that_of_a_kernel_without_audit(sb: Sandbox) -> None:
    probe = (
        "import socket\n"
        "try:\n    socket.socket(16, 3, 9)\nexcept OSError as e:\n    print(e.errno)\n"
    )
    assert sb.exec(["python3", "-c", probe]).stdout.strip() == str(errno.EPROTONOSUPPORT)
