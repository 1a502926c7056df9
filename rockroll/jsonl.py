"""Append-only JSON-lines files that a crash cannot corrupt for the next run: results.jsonl,
manifest.jsonl."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def append_line(path: Path, line: str, lock: threading.Lock) -> None:
    """`line` (one JSON document, no newline) appended to `path` and flushed. A run killed
    mid-write leaves a cut last line: the new one then starts on a line of its own, or it would
    be glued to the fragment and lost with it."""
    data = (line + "\n").encode()
    with lock, open(path, "a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        fh.write(data)
        fh.flush()
