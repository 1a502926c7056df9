"""Progress for a log file: a run piped to a file says what it is doing, at least every
`every` seconds, and a line per finished item; a terminal gets a bar instead."""

from __future__ import annotations

import io
import time

from rich.console import Console

from rockroll.progress import RunProgress


def _piped() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_a_piped_run_prints_items_and_a_status_line_while_it_waits() -> None:
    console, buffer = _piped()
    with RunProgress("oracle on suite", 3, console, every=0.1) as progress:
        progress.done("a: passed in 0.1 s", True)
        time.sleep(0.35)  # nothing finishes: the status lines must still come
        progress.log("built df-1 in 0.2 s")
        progress.done("b: failed (tests-failed) in 0.1 s", False)
    lines = buffer.getvalue().splitlines()
    assert lines[0].endswith("oracle on suite: 3 to run")
    assert lines[1].endswith("[1/3] a: passed in 0.1 s")
    waiting = [line for line in lines if line.endswith("so far")]
    assert len(waiting) >= 2 and "1/3 done, 1 passed" in waiting[0], lines
    assert any(line.endswith("built df-1 in 0.2 s") for line in lines)
    assert lines[-1].split(" ", 1)[1].startswith("oracle on suite: 2/3 done, 1 passed, ")


def test_nothing_counted_says_only_what_is_done() -> None:
    console, buffer = _piped()
    with RunProgress("ipa steps", 2, console, every=60, counted=None) as progress:
        progress.done("step 1: reward 0.50")
    assert buffer.getvalue().splitlines()[-1].split(" ", 1)[1].startswith("ipa steps: 1/2 done, ")


def test_a_terminal_gets_a_bar_and_no_lines() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with RunProgress("oracle on suite", 1, console, every=0.05) as progress:
        time.sleep(0.15)
        progress.log("built df-1")
        progress.done("a: passed", True)
    text = buffer.getvalue()
    assert "built df-1" not in text and "so far" not in text and "1 passed" in text
