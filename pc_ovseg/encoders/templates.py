"""Prompt-template ensembles for text embeddings.

Averaging a class name's embedding over several phrasings ("a photo of a {}.", "a {} in a
scene.") is a free, reliable gain for zero-shot CLIP. The ensemble is computed once per
(encoder, vocabulary, templates) and cached in memory and, given a folder, on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from .base import ImageTextEncoder, l2_normalize

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "data" / "prompts" / "templates.json"
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


def encode_text_with_templates(encoder: ImageTextEncoder, names: Sequence[str],
                               templates: str | Sequence[str] | None = None,
                               cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(T, D) float32 L2-normalised: each name's mean embedding over the templates."""
    names = [str(n) for n in names]
    if not encoder.uses_templates:
        return encoder.encode_text(names)
    tpl = load_templates(templates)
    key = hashlib.sha1(json.dumps([encoder.spec, tpl, names]).encode()).hexdigest()[:20]
    if key in _MEMORY:
        return _MEMORY[key].copy()
    path = Path(cache_dir) / f"text-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        out = np.load(path)
    else:
        flat = [t.format(n.replace("_", " ")) for n in names for t in tpl]
        emb = encoder.encode_text(flat).reshape(len(names), len(tpl), -1)
        out = l2_normalize(emb.mean(1))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, out)
            os.replace(tmp, path)
    _MEMORY[key] = out
    return out.copy()
