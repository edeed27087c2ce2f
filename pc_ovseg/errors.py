"""Errors users see: one line naming the file and the problem, never a traceback."""
from __future__ import annotations

import os


class PcOvsegError(Exception):
    """Base class: the CLI prints ``str(err)`` as one line and exits non-zero."""


def shown_path(path: str) -> str:
    """A path as messages print it: unchanged when printable, else repr-escaped (quoted), so a
    newline or other control character in a file name cannot break the one-line rule."""
    return path if path.isprintable() else repr(path)


class InputError(PcOvsegError):
    """A file or folder the user gave us is missing, malformed or inconsistent.

    ``path`` keeps the real path; the message shows it through ``shown_path``.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        if isinstance(self.path, bytes):
            self.path = os.fsdecode(self.path)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{shown_path(self.path)}: {self.problem}" if self.path else self.problem)

    def __reduce__(self):  # travels between worker processes and Ray actors intact
        return type(self), (self.path, self.problem)


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
