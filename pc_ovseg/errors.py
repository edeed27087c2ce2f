"""Errors users see: one line naming the file and the problem, never a traceback."""
from __future__ import annotations

import os


class PcOvsegError(Exception):
    """Base class: the CLI prints ``str(err)`` as one line and exits non-zero."""


class InputError(PcOvsegError):
    """A file or folder the user gave us is missing, malformed or inconsistent."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


class WeightsError(PcOvsegError):
    """Model weights are missing and cannot be fetched; the message says how to supply them."""


def check_input_path(path: str | os.PathLike, *, want: str = "file") -> str:
    """Fail early, with the path in the message, for missing paths and file/folder mix-ups."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "no such file or directory")
    if want == "file" and os.path.isdir(p):
        raise InputError(p, "is a directory, expected a file")
    if want == "dir" and not os.path.isdir(p):
        raise InputError(p, "is a file, expected a directory")
    if want == "file" and os.path.getsize(p) == 0:
        raise InputError(p, "file is empty")
    return p
