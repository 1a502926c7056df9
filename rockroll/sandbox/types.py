"""Values that cross the sandbox boundary: results of commands and file listings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ExecResult(BaseModel):
    """What one command did. `exit_code` is 128+N when killed by signal N, as shells report."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration: float = Field(0.0, description="seconds from start to exit (or kill)")
    timed_out: bool = False
    truncated: bool = Field(
        False, description="stdout or stderr exceeded the cap; head and tail kept"
    )
    signal: int | None = Field(None, description="signal that ended the command, if any")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout followed by stderr, for callers that want one text."""
        return self.stdout + self.stderr


class FileInfo(BaseModel):
    """One entry of a directory listing inside a sandbox."""

    path: str
    name: str
    is_dir: bool
    size: int
    mode: int
    mtime: float
