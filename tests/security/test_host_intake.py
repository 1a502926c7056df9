"""The host never takes in what the sandbox decides: file reads, trees and output are capped."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.errors import InvalidArgument, TooLarge


def reset_peak() -> int:
    """Reset this process's peak resident memory (VmHWM) to what it holds now; that, in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss()


def peak_rss() -> int:
    """The peak resident memory of this process since the last `reset_peak()`, in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) << 10


# Reading 200 GB takes minutes at any speed, so the generous bounds on the time of a refusal
# below (10 s, for a loaded host) still tell a refusal from a read.
REFUSAL_SECONDS = 10


def test_a_200_gb_sparse_file_is_refused_before_reading(sb: Sandbox) -> None:
    sb.exec("truncate -s 200G /big")
    peak = reset_peak()
    start = time.monotonic()
    with pytest.raises(TooLarge, match="read limit"):
        sb.read_bytes("/big")
    assert time.monotonic() - start < REFUSAL_SECONDS
    assert peak_rss() - peak < 64 << 20
    with pytest.raises(TooLarge):
        sb.download("/big", "/dev/null")
    with pytest.raises(TooLarge):
        sb.open_read("/big", max_bytes=1 << 20)


def test_non_regular_files_are_refused_not_read(sb: Sandbox) -> None:
    sb.exec("mkfifo /fifo && ln -s /dev/zero /zero")
    start = time.monotonic()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        sb.read_bytes("/fifo")  # opening a FIFO to read would block forever
    with pytest.raises((InvalidArgument, PermissionError)):
        sb.read_bytes("/zero")  # never ends (and the root is mounted nodev)
    assert time.monotonic() - start < REFUSAL_SECONDS


def test_trees_are_made_by_the_host_with_a_cap(sb: Sandbox, tmp_path: Path) -> None:
    # A sandbox that replaces tar: it must never run, neither for reading nor for writing.
    sb.exec(
        "printf '#!/bin/sh\\ntouch /tmp/tar-ran; head -c 100000000 /dev/zero\\n' > /tmp/tar && "
        "chmod +x /tmp/tar && cp /tmp/tar /usr/bin/tar && cp /tmp/tar /bin/tar"
    )
    sb.exec(
        "mkdir -p /t/sub && echo hi > /t/sub/f && ln -s / /t/root-link && ln -s /etc/shadow /t/sh"
    )
    data = sb.read_tree("/t")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar}
    assert sorted(members) == ["root-link", "sh", "sub", "sub/f"]
    assert members["root-link"].issym() and members["root-link"].linkname == "/"
    sb.download("/t", tmp_path / "t")
    assert (tmp_path / "t/sub/f").read_text() == "hi\n"
    assert not (tmp_path / "t/root-link").exists()  # an absolute link is not taken in
    sb.write_tree("/w", data)
    assert sb.read_text("/w/sub/f") == "hi\n"
    assert not sb.exists("/tmp/tar-ran")
    sb.exec("truncate -s 200G /t/huge")
    peak = reset_peak()
    start = time.monotonic()
    with pytest.raises(TooLarge, match="tree read limit"):
        sb.read_tree("/t")
    assert time.monotonic() - start < REFUSAL_SECONDS
    assert peak_rss() - peak < 64 << 20


def test_an_archive_cannot_write_outside_its_target(sb: Sandbox) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        payload = b"x"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(InvalidArgument, match="climbs out"):
        sb.write_tree("/dest", buf.getvalue())
    assert not sb.exists("/etc/evil")


def test_a_reader_that_stops_costs_no_memory(sb: Sandbox) -> None:
    stream = sb.stream("yes abcdefghijklmnopqrstuvwxyz | head -c 3000000000", timeout=60)
    next(stream)
    before = reset_peak()
    time.sleep(3)  # the command would write ~1 GB/s if it were not held back
    assert peak_rss() - before < 64 << 20
    # held back, not finished: 3 GB at the pace of a reader that reads nothing
    assert "yes" in sb.exec("ps -e -o comm=").stdout.split()
    stream.close()  # the reader leaves: the command is killed
    deadline = time.monotonic() + 30
    while "yes" in sb.exec("ps -e -o comm=").stdout.split() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "yes" not in sb.exec("ps -e -o comm=").stdout.split()


def test_a_slow_reader_still_times_out(sb: Sandbox) -> None:
    stream = sb.stream("yes | head -c 3000000000", timeout=2)
    next(stream)
    result: list = []

    def drain_later() -> None:
        time.sleep(4)
        try:
            while True:
                next(stream)
        except StopIteration as done:
            result.append(done.value)

    thread = threading.Thread(target=drain_later)
    thread.start()
    thread.join(60)
    assert result and result[0].timed_out and result[0].exit_code == 137, result
