"""Disk is a limit like memory: ENOSPC inside, nothing filled on the host."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.errors import InvalidArgument
from rockroll.sandbox.paths import home_subdir
from rockroll.sandbox.records import load_record
from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.workspace import open_sandbox, task_image


def host_free() -> int:
    st = os.statvfs(home_subdir("sandboxes"))
    return st.f_bavail * st.f_frsize


def allocated(path: Path) -> int:
    """Bytes of the host's disk a (sparse) file takes."""
    return os.stat(path).st_blocks * 512


def test_writes_past_the_disk_limit_fail_with_enospc(base_image: str) -> None:
    with Sandbox.create(base_image, disk="64m") as sb:
        rec = load_record(sb.id)
        assert rec is not None
        image = rec.disk_image  # the file on the host that holds the sandbox's filesystem
        assert allocated(image) < 8 << 20  # sparse: only the metadata of an empty filesystem
        res = sb.exec("fallocate -l 60G /big; echo rc=$?")
        assert "No space left on device" in res.stderr and "rc=1" in res.stdout, res
        res = sb.exec("rm -f /big; dd if=/dev/zero of=/fill bs=1M count=200 2>&1; echo rc=$?")
        assert "No space left on device" in res.stdout and "rc=1" in res.stdout, res
        size = int(sb.exec("stat -c %s /fill").stdout)
        assert 30 << 20 < size <= 64 << 20, size
        sb.exec("sync /fill")
        # the host holds no more than the limit for it, and does hold what was written
        assert size - (8 << 20) < allocated(image) <= 64 << 20, (size, allocated(image))
        total = sb.exec("df -B1 --output=size / | tail -1").stdout.strip()
        assert 50 << 20 < int(total) <= 64 << 20, total
        assert sb.exec("rm /fill && echo ok > /after && cat /after").stdout == "ok\n"
    # closed: the image leaves the sandbox's directory for the trash, whose deleter removes it
    assert not image.exists()
    trashed = home_subdir("trash") / f"{sb.id}-{image.name}"
    deadline = time.monotonic() + 60
    while trashed.exists():
        assert time.monotonic() < deadline, f"{trashed} was never deleted"
        time.sleep(0.1)


def test_the_inode_limit_holds_too(base_image: str) -> None:
    with Sandbox.create(base_image, disk="64m", inodes=2000) as sb:
        res = sb.exec("mkdir /many && cd /many && for i in $(seq 3000); do : > f$i || break; done")
        assert "No space left on device" in res.stderr, res
        made = int(sb.exec("ls /many | wc -l").stdout)
        assert 1000 < made < 2000, made


def test_the_default_disk_is_ten_gigabytes(sb: Sandbox) -> None:
    total = int(sb.exec("df -B1 --output=size / | tail -1").stdout)
    assert 9 << 30 < total <= 10 << 30, total


def test_a_disk_the_host_cannot_hold_is_refused(base_image: str) -> None:
    with pytest.raises(InvalidArgument, match="free on the host"):
        Sandbox.create(base_image, disk=host_free() + (1 << 40))
    with pytest.raises(InvalidArgument, match="disk"):
        Sandbox.create(base_image, disk="1k")


def test_snapshots_carry_the_files_not_the_limit(sb: Sandbox) -> None:
    sb.write_text("/data/x", "kept")
    with sb.fork(disk="32m") as child:
        assert child.exec("cat /data/x").stdout == "kept"
        assert "No space left" in child.exec("fallocate -l 100M /big").stderr
        # the parent, on its own 10 GB, takes the same file: the limit is the child's own
        assert sb.exec("fallocate -l 100M /big && rm /big").exit_code == 0
        total = int(child.exec("df -B1 --output=size / | tail -1").stdout)
        assert 16 << 20 < total <= 32 << 20, total


def test_a_harbor_tasks_storage_mb_is_its_disk(tmp_path: Path) -> None:
    task = tmp_path / "small-disk"
    (task / "tests").mkdir(parents=True)
    (task / "instruction.md").write_text("Fill the disk.\n")
    (task / "tests/test.sh").write_text("echo 1 > /logs/verifier/reward.txt\n")
    (task / "task.toml").write_text("[environment]\nstorage_mb = 64\nmemory_mb = 256\n")
    loaded = load_harbor(task)
    assert (loaded.resources.disk, loaded.resources.memory) == ("64m", "256m")
    with open_sandbox(loaded, task_image(loaded)) as sb:
        total = int(sb.exec("df -B1 --output=size / | tail -1").stdout)
        assert 50 << 20 < total <= 64 << 20, total
        assert "No space left" in sb.exec("fallocate -l 1G /big").stderr
