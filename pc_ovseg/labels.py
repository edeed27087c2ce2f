"""Label sets: class names by label id, prompts per class, raw dataset ids; one name normaliser.

A *label set* names the classes of a benchmark by label id, says which ids are not evaluated and
which text prompts to use for each class (JSON files in ``data/labelsets``; see docs/eval.md).
:func:`parse_classes` turns what ``--classes``/``--labels`` accept into one; :func:`remap_labels`
maps a dataset's raw ids onto its ids. :func:`norm_name` is the one rule by which class names and
query texts match, in label sets, the label-space encoder and label-space queries alike.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError

IGNORE = "ignore"

_PKG_DIR = Path(__file__).resolve().parent
# Installed wheels carry the files at pc_ovseg/labelsets (pyproject [tool.scikit-build]
# wheel.packages); a source checkout has them at <repo>/data/labelsets.
LABELSET_DIRS: tuple[Path, ...] = (_PKG_DIR / "labelsets", _PKG_DIR.parent / "data" / "labelsets")


def norm_name(name: str) -> str:
    """The key class names and query texts match by: lower case, letters and digits only.

    "T-Shirt", "t_shirt", "t shirt" and "tshirt" are one name, and so are ScanNet's
    "otherfurniture" and "other furniture".
    """
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


@dataclass
class LabelSet:
    """Class names indexed by label id, with the prompts to query each class by.

    ``class_names[i]`` is the name of label id ``i``; ``"ignore"`` (or an id in ``ignore_ids``)
    marks ids that are not evaluated. ``raw_map`` maps a dataset's raw ids (NYU40 ids, SemanticKITTI
    .label ids, ...) to these ids for :func:`remap_labels`; ``raw_inverse`` picks the raw id each id
    is written back as (:meth:`to_raw`; by default the smallest raw id that maps to it).
    ``groups`` names subsets a benchmark also reports means over (ScanNet200 head/common/tail).
    """

    name: str
    class_names: list[str]
    prompts: dict[str, list[str]] = field(default_factory=dict)
    ignore_ids: tuple[int, ...] = ()
    title: str = ""
    description: str = ""
    raw_map: dict[int, int] | None = None
    raw_names: list[str] | None = None
    raw_inverse: dict[int, int] | None = None
    groups: dict[str, list[str]] | None = None
    source: str = ""
    citation: str = ""
    path: str | None = None

    def __post_init__(self):
        self.class_names = [str(n).strip() for n in self.class_names]
        self.ignore_ids = tuple(sorted({int(i) for i in self.ignore_ids}))
        from collections import Counter
        names = self.names  # a property that walks every class: once, not per name
        for n in names:
            self.prompts.setdefault(n, [n])
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        if dup:
            raise InputError(self.path, f"label set {self.name!r} repeats class names: {', '.join(dup)}")

    @property
    def ignored(self) -> np.ndarray:
        """(C,) bool: ids of class_names that are not evaluated."""
        ign = np.array([n.lower() == IGNORE for n in self.class_names], dtype=bool)
        ids = [i for i in self.ignore_ids if 0 <= i < len(ign)]
        ign[ids] = True
        return ign

    @property
    def ids(self) -> np.ndarray:
        """Label ids that are evaluated, ascending."""
        return np.flatnonzero(~self.ignored)

    @property
    def names(self) -> list[str]:
        """Names of the evaluated classes, in id order (the vocabulary to query with)."""
        ign = self.ignored
        return [n for n, i in zip(self.class_names, ign) if not i]

    @property
    def num_classes(self) -> int:
        return int((~self.ignored).sum())

    def prompt_lists(self) -> list[list[str]]:
        """Prompts of each evaluated class, in the order of :attr:`names`."""
        return [list(self.prompts[n]) for n in self.names]

    def prompt_names(self) -> list[str]:
        """One query text per evaluated class (its first prompt), in the order of :attr:`names`."""
        return [self.prompts[n][0] if self.prompts[n] else n for n in self.names]

    def flat_prompts(self) -> tuple[list[str], np.ndarray]:
        """Every prompt of every evaluated class, and the class position (in :attr:`names`) of each.

        Querying with all prompts and mapping the winning prompt back to its class lets a class be
        found by any of its synonyms.
        """
        texts, owner = [], []
        for k, n in enumerate(self.names):
            for p in self.prompts[n] or [n]:
                texts.append(p)
                owner.append(k)
        return texts, np.asarray(owner, dtype=np.int64)

    def id_of(self, name: str) -> int | None:
        """Label id of a class name (case, spaces and punctuation do not matter)."""
        key = norm_name(name)
        for i, n in zip(self.ids, self.names):
            if norm_name(n) == key:
                return int(i)
        return None

    def vocabulary(self) -> "Vocabulary":
        """The query texts of the evaluated classes (first prompts), carrying this label set."""
        return Vocabulary(self)

    def to_raw(self, ids: np.ndarray, *, default: int = 0) -> np.ndarray:
        """Label ids -> the dataset's raw ids (benchmark files: NYU40 ids, SemanticKITTI .label ids).

        The inverse of ``raw_map``: ``raw_inverse`` where given, else the smallest raw id mapping to
        the id (the official evaluators map raw ids through ``raw_map`` again, so any one is right).
        Ids without a raw id (-1 = unseen) become ``default``.
        """
        if self.raw_map is None:
            raise InputError(self.path, f"label set {self.name!r} has no raw ids to write benchmark files with")
        inv: dict[int, int] = {}
        for raw, i in sorted(self.raw_map.items(), reverse=True):
            inv[i] = raw
        inv.update(self.raw_inverse or {})
        return remap_labels(ids, inv, default=default)

    def eval_names(self) -> list[str]:
        """class_names with every non-evaluated id spelled ``"ignore"`` (the --classes convention)."""
        ign = self.ignored
        return [IGNORE if i else n for n, i in zip(self.class_names, ign)]

    def to_dict(self) -> dict:
        d = {"name": self.name, "title": self.title, "description": self.description,
             "class_names": self.class_names, "ignore_ids": list(self.ignore_ids), "prompts": self.prompts,
             "source": self.source, "citation": self.citation}
        if self.raw_map is not None:
            d["raw_map"] = {str(k): v for k, v in self.raw_map.items()}
        if self.raw_names is not None:
            d["raw_names"] = self.raw_names
        if self.raw_inverse is not None:
            d["raw_inverse"] = {str(k): v for k, v in self.raw_inverse.items()}
        if self.groups is not None:
            d["groups"] = self.groups
        return d

    @classmethod
    def from_dict(cls, d: Mapping, path: str | None = None) -> "LabelSet":
        try:
            names = d["class_names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
                raise InputError(path, "'class_names' must be a non-empty list of strings")
            raw_map = None
            if d.get("raw_ids") is not None:
                raw_ids = d["raw_ids"]
                if len(raw_ids) != len(names):
                    raise InputError(path, f"'raw_ids' has {len(raw_ids)} entries, 'class_names' {len(names)}")
                raw_map = {int(r): i for i, r in enumerate(raw_ids)}
            if d.get("raw_map") is not None:
                raw_map = {**(raw_map or {}), **{int(k): int(v) for k, v in d["raw_map"].items()}}
            prompts = {str(k): [str(p) for p in v] for k, v in (d.get("prompts") or {}).items()}
            raw_inverse = {int(k): int(v) for k, v in d["raw_inverse"].items()} if d.get("raw_inverse") else None
            return cls(name=str(d.get("name") or Path(path or "custom").stem), class_names=list(names),
                       prompts=prompts, ignore_ids=tuple(d.get("ignore_ids") or ()),
                       title=str(d.get("title", "")), description=str(d.get("description", "")),
                       raw_map=raw_map, raw_names=d.get("raw_names"), raw_inverse=raw_inverse,
                       groups={str(k): [str(n) for n in v] for k, v in d["groups"].items()} if d.get("groups") else None,
                       source=str(d.get("source", "")),
                       citation=str(d.get("citation", "")), path=path)
        except KeyError as exc:
            raise InputError(path, f"label set has no {exc.args[0]!r} entry") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(path, f"malformed label set ({exc})") from None

    @classmethod
    def from_names(cls, names: Sequence[str], name: str = "custom") -> "LabelSet":
        return cls(name=name, class_names=list(names))


class Vocabulary(list):
    """A label set's query texts (each class's first prompt) that keep the label set itself, so
    what is labelled from them stores class names, ids, prompts and codes (``pipeline.run`` and
    the 2D-3D ensemble take it as the plain list of texts)."""

    def __init__(self, labelset: LabelSet):
        super().__init__(labelset.prompt_names())
        self.labelset = labelset


def _labelset_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in LABELSET_DIRS:
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                found.setdefault(p.stem, p)
    return found


def list_labelsets() -> list[str]:
    """Names of the bundled label sets (``scannet20``, ``asprs``, ...)."""
    return sorted(_labelset_files())


def _read_labelset_file(path: str | os.PathLike) -> LabelSet:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(p, "no such label set file")
    if p.lower().endswith(".txt"):  # one class name per line
        try:
            with open(p, encoding="utf-8") as f:
                names = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        except UnicodeDecodeError:
            raise InputError(p, "not a text file of class names (not UTF-8)") from None
        if any(not n.isprintable() for n in names):
            raise InputError(p, "class names must be printable text")
        if not names:
            raise InputError(p, "no class names in file")
        ls = LabelSet.from_names(names, name=Path(p).stem)
        ls.path = p
        return ls
    try:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(p, f"not a JSON label set ({exc})") from None
    if isinstance(d, list):  # a bare list of names
        d = {"name": Path(p).stem, "class_names": d}
    if not isinstance(d, dict):
        raise InputError(p, "a label set must be a JSON object or a list of class names")
    return LabelSet.from_dict(d, path=p)


def load_labelset(name_or_path: str | os.PathLike) -> LabelSet:
    """A bundled label set by name (``ScanNet-20``, ``scannet20``, ``asprs``) or a JSON/.txt file."""
    s = os.fspath(name_or_path)
    files = _labelset_files()
    key = norm_name(s)
    for stem, p in files.items():
        if norm_name(stem) == key:
            return _read_labelset_file(p)
    if os.path.exists(s) or s.lower().endswith((".json", ".txt")):
        return _read_labelset_file(s)
    raise InputError(None, f"unknown label set {s!r} (bundled: {', '.join(sorted(files))})")


def parse_classes(arg: "str | os.PathLike | Sequence[str] | LabelSet") -> LabelSet:
    """What ``--classes``/``--labels`` accept: a label-set name, a JSON/.txt path, or "a,b,c".

    In a comma list the position is the label id and ``ignore`` marks ids that are not evaluated.
    """
    if isinstance(arg, LabelSet):
        return arg
    if not isinstance(arg, (str, os.PathLike)):
        return LabelSet.from_names([str(n) for n in arg])
    s = os.fspath(arg).strip()
    if not s:
        raise InputError(None, "empty class list")
    if "," not in s:  # a single word is a label set or a file; "chair," is a one-class list
        try:
            return load_labelset(s)
        except InputError as exc:
            if exc.path is None:
                raise InputError(None, f"{exc.problem}; for a one-class list write {s + ','!r}") from None
            raise
    names = [n.strip() for n in (s[:-1] if s.endswith(",") else s).split(",")]
    if any(not n for n in names):
        raise InputError(None, f"empty class name in {s!r}")
    return LabelSet.from_names(names)


# --- label remapping ----------------------------------------------------------------------------

def remap_labels(labels: np.ndarray, mapping: "Mapping[int, int] | Sequence[int] | LabelSet", *,
                 default: int = -1) -> np.ndarray:
    """Map raw ids to evaluation ids (NYU40 -> ScanNet-20, SemanticKITTI raw -> 19, ...).

    ``mapping`` is a dict raw -> id, a sequence whose position is the raw id, or a LabelSet (its
    ``raw_map``). Ids without an entry, and negative ids, become ``default``. Vectorised with a
    lookup table, so it costs one gather per point.
    """
    if isinstance(mapping, LabelSet):
        if mapping.raw_map is None:
            raise InputError(mapping.path, f"label set {mapping.name!r} has no raw id mapping")
        mapping = mapping.raw_map
    if not isinstance(mapping, Mapping):
        mapping = {i: int(v) for i, v in enumerate(mapping)}
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        lab = as_int_labels(lab, None)
    lab = lab.astype(np.int64, copy=False)
    if not mapping:
        return np.full(lab.shape, default, dtype=np.int32)
    keys = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    vals = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    out = np.full(lab.shape, default, dtype=np.int32)
    if keys.min() >= 0 and keys.max() < (1 << 22):  # dense table: fast and small
        table = np.full(int(keys.max()) + 1, default, dtype=np.int32)
        table[keys] = vals
        ok = (lab >= 0) & (lab < len(table))
        out[ok] = table[lab[ok]]
        return out
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, lab), 0, len(keys) - 1)
    hit = keys[pos] == lab
    out[hit] = vals[pos[hit]]
    return out


def as_int_labels(a: np.ndarray, path) -> np.ndarray:
    """Integer label ids from any numeric array (float label files hold whole numbers)."""
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind != "f":
        raise InputError(path, f"labels must be numeric, got dtype {a.dtype}")
    bad = ~np.isfinite(a)
    r = np.rint(np.where(bad, -1, a))
    if np.any(np.abs(r - np.where(bad, -1, a)) > 1e-3):
        raise InputError(path, "labels must be whole numbers")
    return r.astype(np.int64)


__all__ = ["IGNORE", "LABELSET_DIRS", "LabelSet", "Vocabulary", "as_int_labels", "list_labelsets",
           "load_labelset", "norm_name", "parse_classes", "remap_labels"]


def vocabulary(labels) -> dict:
    """``labels`` (a label-set name, a file, 'a,b,c' or a list) -> what labelling takes: the
    query texts (carrying the label set), their class ids and how LAS codes them."""
    if labels is None or (isinstance(labels, str) and not labels.strip()):
        raise InputError(None, "--labels is empty: give a label set, a file, or comma-separated names")
    ls = parse_classes(labels)
    return {"vocabulary": ls.vocabulary(), "class_ids": list(ls.ids),
            "las_codes": "asprs" if ls.name == "asprs" else "shift"}
