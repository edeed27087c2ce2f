"""Prompt-template ensembles for text embeddings.

Averaging a class name's embedding over several phrasings ("a photo of a {}.", "a {} in a
scene.") is a free, reliable gain for zero-shot CLIP. The ensemble is computed once per
(encoder, vocabulary, templates) and cached in memory and, given a folder, on disk (queries use
:func:`text_cache_dir`), so a repeated query needs no model at all.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..store import atomic_write
from .base import ImageTextEncoder, l2_normalize

_PKG = Path(__file__).resolve().parents[1]
# source tree: <repo>/data/prompts; an installed wheel may carry data/ as pc_ovseg/_data
PROMPTS_FILE = next((p for p in (_PKG.parent / "data" / "prompts" / "templates.json",
                                 _PKG / "_data" / "prompts" / "templates.json") if p.is_file()),
                    _PKG.parent / "data" / "prompts" / "templates.json")
_FALLBACK = ["a photo of a {}."]   # only if the package was installed without data/prompts
_MEMORY: dict[str, np.ndarray] = {}


def load_templates(name_or_path: str | Sequence[str] | None = "default") -> list[str]:
    """Templates by set name in data/prompts/templates.json, from a JSON file, or given as a list."""
    if name_or_path is None:
        name_or_path = "default"
    if not isinstance(name_or_path, str):
        t = [str(x) for x in name_or_path]
    elif os.path.isfile(name_or_path):
        try:
            data = json.load(open(name_or_path))
        except (OSError, ValueError) as exc:
            raise InputError(name_or_path, f"not a JSON template file ({exc})") from None
        t = data.get("default", []) if isinstance(data, dict) else data
    elif PROMPTS_FILE.is_file():
        sets = json.load(open(PROMPTS_FILE))
        if name_or_path not in sets:
            raise InputError(PROMPTS_FILE, f"no template set {name_or_path!r} (have {', '.join(sets)})")
        t = sets[name_or_path]
    else:
        t = list(_FALLBACK)
    if not t or any("{}" not in x for x in t):
        raise InputError(name_or_path if isinstance(name_or_path, str) else None,
                         "every prompt template must contain '{}' for the class name")
    return list(t)


def text_cache_dir() -> Path:
    """The user's text-embedding cache: ``$PC_OVSEG_CACHE/text``, else ``~/.cache/pc_ovseg/text``
    (``$XDG_CACHE_HOME`` honoured)."""
    root = os.environ.get("PC_OVSEG_CACHE")
    if root:
        return Path(root).expanduser() / "text"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "pc_ovseg" / "text"


def encoder_identity(spec: str) -> list | None:
    """What fixes an encoder's text embeddings: its spec, a local weights file by absolute path,
    size and mtime (a replaced file is another encoder); None for random weights (no identity)."""
    for i, ch in enumerate(spec):
        if ch == ":" and os.path.isfile(spec[i + 1:]):
            st = os.stat(spec[i + 1:])
            return [spec[:i + 1] + os.path.abspath(spec[i + 1:]), st.st_size, st.st_mtime_ns]
    if spec.count(":") >= 2 and spec.rsplit(":", 1)[1] in ("", "none"):
        return None
    return [spec]


def _entry(spec: str, names: list[str], templates, cache_dir) -> tuple[list[str], str | None, Path | None]:
    tpl = load_templates(templates)
    ident = encoder_identity(spec)
    if ident is None:
        return tpl, None, None
    key = hashlib.sha1(json.dumps([ident, tpl, names]).encode()).hexdigest()[:20]
    return tpl, key, Path(cache_dir) / f"text-{key}.npy" if cache_dir else None


def cached_text_embeddings(spec: str, names: Sequence[str], templates: str | Sequence[str] | None = None,
                           cache_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """The ensemble of ``names`` from the memory or disk cache, else None: looked up by the
    encoder's spec alone, so a hit never builds the model."""
    names = [str(n) for n in names]
    _, key, path = _entry(str(spec), names, templates, cache_dir)
    return _lookup(key, path, len(names))


def _lookup(key: str | None, path: Path | None, n: int) -> np.ndarray | None:
    if key is None:
        return None
    if key not in _MEMORY:
        if path is None or not path.is_file():
            return None
        try:
            out = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # unreadable: encoded again and replaced
            return None
        if out.ndim != 2 or len(out) != n or out.dtype != np.float32:
            return None
        _MEMORY[key] = out
    return _MEMORY[key].copy()


def encode_text_with_templates(encoder: ImageTextEncoder, names: Sequence[str],
                               templates: str | Sequence[str] | None = None,
                               cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(T, D) float32 L2-normalised: each name's mean embedding over the templates.

    One cache entry per (encoder identity, templates, names), written atomically; a cache folder
    that cannot be written only costs the next call a re-encode.
    """
    names = [str(n) for n in names]
    if not encoder.uses_templates:
        return encoder.encode_text(names)
    tpl, key, path = _entry(encoder.spec, names, templates, cache_dir)
    out = _lookup(key, path, len(names))
    if out is not None:
        return out
    flat = [t.format(n.replace("_", " ")) for n in names for t in tpl]
    out = l2_normalize(encoder.encode_text(flat).reshape(len(names), len(tpl), -1).mean(1))
    if key is None:  # random weights: nothing to key on
        return out
    if path is not None:
        try:
            with atomic_write(path) as tmp:
                np.save(tmp, out)
        except OSError:  # e.g. a read-only home: still answer
            pass
    _MEMORY[key] = out
    return out.copy()
