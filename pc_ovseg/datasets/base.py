"""One interface for benchmark datasets in their official layouts.

A dataset module subclasses :class:`Dataset` and registers it with ``@register_dataset("name")``;
``bench``, training and the tests only ever see :class:`GTScene` objects: the points to label,
their ground truth as ids of a label set, instance ids where the dataset has them, and posed
frames where it has them (lazy: no pixel is read until a view is made).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..data import FrameSequence, Mesh, PointCloud
from ..errors import InputError
from ..labels import LabelSet, load_labelset
from ..registry import Registry

DATASETS = Registry("dataset_name")


def register_dataset(name: str):
    return DATASETS.register(name)


@dataclass
class GTScene:
    """A dataset scene: what to label, what is true, and what sees it.

    ``labels`` are ids into ``labelset.class_names`` (-1 = unannotated or a class the label set
    does not evaluate); ``instances`` are per-point object ids (0 = none); ``frames`` are the
    dataset's own posed RGB-D frames (None for frame-less datasets, which get rendered views);
    ``mesh`` is the scene's surface where the dataset ships one (rendered views use it).
    """

    name: str
    cloud: PointCloud
    labels: np.ndarray
    labelset: LabelSet
    instances: np.ndarray | None = None
    frames: FrameSequence | None = None
    mesh: Mesh | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.cloud)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if len(self.labels) != n:
            raise InputError(self.source, f"{len(self.labels)} labels for {n} points")
        if self.instances is not None:
            self.instances = np.asarray(self.instances, np.int64).reshape(-1)
            if len(self.instances) != n:
                raise InputError(self.source, f"{len(self.instances)} instance ids for {n} points")


class Dataset:
    """A dataset root as the dataset ships it.

    Subclasses set ``labelsets`` (the label sets their GT can be scored in, the first the
    default) and ``splits``, and implement :meth:`scenes` and :meth:`load`. ``frame_skip`` keeps
    every Nth dataset frame (ScanNet benchmarks fuse every 20th-ish); readers must stay lazy.
    """

    dataset_name: ClassVar[str]
    labelsets: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    has_frames: ClassVar[bool] = False
    benchmark_format: ClassVar[str | None] = None   # pc_ovseg.export.write_benchmark format of its predictions

    def __init__(self, root: str | os.PathLike, *, labels: str | None = None, frame_skip: int = 1):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise InputError(self.root, f"{self.dataset_name} root is not a folder")
        name = labels or self.labelsets[0]
        if name not in self.labelsets:
            raise InputError(self.root, f"{self.dataset_name} is scored in {', '.join(self.labelsets)}, not {name!r}")
        self.labelset: LabelSet = load_labelset(name)
        self.frame_skip = max(1, int(frame_skip))

    def scenes(self, split: str) -> list[str]:
        """Scene names of ``split`` in the dataset's official order."""
        raise NotImplementedError

    def load(self, name: str) -> GTScene:
        """One scene; a malformed file raises InputError naming it."""
        raise NotImplementedError

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise InputError(self.root, f"{self.dataset_name} has splits {', '.join(self.splits)}, not {split!r}")


def get_dataset(name: str, root, **kw) -> Dataset:
    from . import _load_all
    _load_all()
    if name not in DATASETS:
        raise InputError(None, f"unknown dataset {name!r} (known: {', '.join(DATASETS.names())})")
    return DATASETS[name](root, **kw)


def split_file(path: str) -> list[str]:
    """Scene names from an official split list (one per line, blank lines and # comments skipped)."""
    if not os.path.isfile(path):
        raise InputError(path, "split list not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
