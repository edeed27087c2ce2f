"""Files on disk: one atomic writer, content digests for cache keys, and safe checkpoint loading.

Every result, cache entry and checkpoint pc_ovseg writes goes through :func:`atomic_write`, so a
killed run never leaves a torn file; every cache key that depends on an input uses
:func:`digest` of its content, not its path; every ``.pt``/``.pth`` is read by
:func:`load_checkpoint`, which never unpickles code.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, check_input_path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension, so ``np.savez`` adds none) that
    replaces ``path`` only when the block finishes; missing parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_stamp(path) -> list:
    """[absolute path, size, mtime] of a file ([] when there is none): the part of a result key
    that says a checkpoint or an input file changed, without reading it."""
    if not path or not os.path.exists(path):
        return []
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def finished(path: str | os.PathLike, key: str) -> dict | None:
    """A unit of work's result record (a scene's or a tile's ``result.json``) when it holds
    ``key``, else None (missing, torn, or made with other settings): what resuming skips."""
    try:
        r = json.loads(Path(path).read_text())
        return r if isinstance(r, dict) and r.get("key") == key else None
    except (OSError, ValueError):
        return None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, **kw) -> None:
    write_text(path, json.dumps(obj, **{"indent": 2, "default": json_default, **kw}))


def json_default(o):
    """numpy scalars and arrays as their values; anything else as its string (results never fail to write)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def cached(path: str | os.PathLike, read, make, write):
    """``read(path)`` when a sound entry exists, else ``make()``, stored with ``write(tmp, value)``
    through the atomic writer: a cache entry that cannot be read is made again, never trusted."""
    path = Path(path)
    if path.exists():
        try:
            return read(path)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, InputError):
            pass
    value = make()
    with atomic_write(path) as tmp:
        write(tmp, value)
    return value


def digest(*parts, length: int = 16) -> str:
    """Hash of arrays (dtype, shape and every byte), strings and JSON-able values: a cache key
    that changes when an input's content changes, whatever its path."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B") if a.size else b"")
        elif isinstance(p, (bytes, bytearray)):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=json_default).encode())
        h.update(b"\x00")
    return h.hexdigest()[:length]


# -- checkpoints ----------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, *, what: str = "checkpoint", mmap: bool = False):
    """``torch.load`` that cannot run code: tensors, numbers, strings and containers only
    (``weights_only=True``); a file holding any other Python object is refused, unexecuted.
    ``mmap`` maps the tensors instead of reading them (a check before another reader loads it).
    TorchScript archives (OpenAI's CLIP files) hold no pickled code either and load as their
    state dict."""
    import pickle

    import torch

    p = check_input_path(path)
    if mmap and not zipfile.is_zipfile(p):
        mmap = False  # legacy (pre-zip) files cannot be memory-mapped: read them
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        bad = next((ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()), "")
        if not bad:  # not a pickle of objects at all: junk or a truncated stream
            raise InputError(p, f"not a checkpoint (the {what} is truncated or not a PyTorch file)") from None
        raise InputError(p, f"refused to load this {what}: it holds Python objects, not just tensors and "
                            f"plain data ({bad}); pc_ovseg never unpickles code. "
                            "Re-save it from trusted code as a state dict (torch.save(model.state_dict(), ...))"
                         ) from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            try:
                return torch.jit.load(p, map_location="cpu").state_dict()
            except Exception as exc2:  # noqa: BLE001 - a broken archive is bad input
                raise InputError(p, f"cannot read {what} (TorchScript archive: {type(exc2).__name__})") from None
        raise InputError(p, f"not a checkpoint (the {what} is truncated or not a PyTorch file: "
                            f"{_first_line(exc)})") from None
    except (EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        raise InputError(p, f"not a checkpoint (the {what} is truncated or not a PyTorch file: "
                            f"{type(exc).__name__})") from None


def save_checkpoint(obj, path: str | os.PathLike) -> None:
    """Atomic ``torch.save`` of plain data, so the result reloads through :func:`load_checkpoint`."""
    import torch
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]
