"""What the viewer shows: a cloud, its display subsample, and (for results) a query engine.

Queries always run on every point; only their answer is cut down to the displayed subset
(``display_ids``), so a 20M-point result stays interactive while labels stay exact.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..data import FeatureCloud, PointCloud
from ..errors import InputError, PcOvsegError, check_input_path

if TYPE_CHECKING:
    from ..query import QueryEngine

#: Per-point fields of plain clouds that hold integer class labels (shown in "label" mode).
LABEL_FIELDS = ("label", "labels", "semantic", "semantic_label", "class", "classification", "scalar_label")
#: Byte sent for "no label" in the uint8 label stream (vocabularies are capped below it).
NO_LABEL = 255


@dataclass
class ViewerScene:
    """A cloud prepared for display; ``features`` is None for plain clouds (colour modes only)."""

    cloud: PointCloud
    features: FeatureCloud | None = None
    max_display_points: int = 2_000_000
    title: str = ""
    seed: int = 0
    query_error: str | None = None        # why a result cannot be queried (e.g. missing weights)
    #: an engine built by the caller (e.g. with an already loaded text encoder); else built lazily
    query_engine: "QueryEngine | None" = field(default=None, repr=False)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_feature_cloud(cls, fc: FeatureCloud, **kw) -> "ViewerScene":
        return cls(fc.cloud, fc, **kw)

    @classmethod
    def from_path(cls, path, *, layout: str | None = None, **kw) -> "ViewerScene":
        """A FeatureCloud .npz (fused or distilled) or any cloud ``pc_ovseg.io.read_cloud`` reads."""
        p = check_input_path(path)
        kw.setdefault("title", os.path.basename(p))
        if _is_feature_cloud(p):
            return cls.from_feature_cloud(FeatureCloud.load(p), **kw)
        from ..io import read_cloud  # lazily: a result needs no cloud readers
        cloud = read_cloud(p, layout=layout)  # meshes come back as their vertices
        if len(cloud) == 0:
            raise InputError(p, "the cloud has no points")
        return cls(cloud, None, **kw)

    def __post_init__(self):
        if self.features is not None and len(self.features.features) != len(self.cloud):
            raise ValueError("features and cloud differ in length")
        if self.query_engine is not None and self.query_engine.fc is not self.features:
            raise ValueError("query_engine was built for another feature cloud")
        if self.max_display_points < 1:
            raise ValueError("max_display_points must be >= 1")

    # -- display subset -------------------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return len(self.cloud)

    @cached_property
    def display_ids(self) -> np.ndarray:
        """Sorted ids of the displayed points: all, or a seeded uniform random subsample."""
        n = self.n_points
        if n <= self.max_display_points:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n, self.max_display_points, replace=False)).astype(np.int64)

    @property
    def n_display(self) -> int:
        return len(self.display_ids)

    @cached_property
    def centre(self) -> np.ndarray:
        """Centre (local frame) that display positions are relative to, for float32 precision."""
        xyz = self.cloud.xyz[self.display_ids]
        finite = np.isfinite(xyz).all(1)
        if not finite.any():
            return np.zeros(3)
        return (xyz[finite].min(0).astype(np.float64) + xyz[finite].max(0)) / 2.0

    def positions(self) -> np.ndarray:
        """(M, 3) float32 displayed positions relative to ``centre``; NaN/inf become the centre."""
        xyz = (self.cloud.xyz[self.display_ids].astype(np.float64) - self.centre).astype(np.float32)
        xyz[~np.isfinite(xyz).all(1)] = 0.0
        return np.ascontiguousarray(xyz)

    def colors(self) -> np.ndarray | None:
        rgb = self.cloud.rgb
        return None if rgb is None else np.ascontiguousarray(rgb[self.display_ids], np.uint8)

    def coverage(self) -> np.ndarray | None:
        """How many views saw each displayed point (uint16), for fused results."""
        if self.features is None or not self.features.view_count.any():  # e.g. no view record
            return None
        return np.ascontiguousarray(self.features.view_count[self.display_ids], np.uint16)

    @cached_property
    def radius(self) -> float:
        """Radius around ``centre`` holding 99% of the displayed points: the camera frames that,
        so a few far outliers (LiDAR returns, photogrammetry noise) do not shrink the scene."""
        xyz = self.positions()
        if not len(xyz):
            return 1.0
        return float(np.percentile(np.sqrt((xyz.astype(np.float64) ** 2).sum(1)), 99))

    @cached_property
    def label_field(self) -> str | None:
        for name in LABEL_FIELDS:
            v = self.cloud.fields.get(name)
            if v is not None and v.ndim == 1 and np.issubdtype(v.dtype, np.integer):
                return name
        return None

    @cached_property
    def _field_values(self) -> np.ndarray | None:
        if self.label_field is None:
            return None
        return np.unique(self.cloud.fields[self.label_field])[:NO_LABEL]  # more is unreadable anyway

    def field_label_names(self) -> list[str] | None:
        values = self._field_values
        return None if values is None else [f"{self.label_field} {int(x)}" for x in values]

    def field_labels(self) -> np.ndarray | None:
        """A plain cloud's integer label field as uint8 indices into ``field_label_names()``."""
        values = self._field_values
        if values is None:
            return None
        shown = self.cloud.fields[self.label_field][self.display_ids]
        idx = np.clip(np.searchsorted(values, shown), 0, len(values) - 1)
        return np.where(values[idx] == shown, idx, NO_LABEL).astype(np.uint8)

    # -- queries --------------------------------------------------------------------------------
    @property
    def queryable(self) -> bool:
        return self.features is not None and self.query_error is None

    @property
    def message(self) -> str | None:
        """Why the query box is disabled, or None."""
        if self.features is None:
            return "plain cloud: no features to query (colour modes only)"
        if self.query_error is not None:
            return f"queries disabled: {self.query_error}"
        return None

    @property
    def engine(self) -> "QueryEngine":
        if self.features is None:
            raise RuntimeError("a plain cloud has no features to query")
        if self.query_engine is None:
            from ..query import QueryEngine
            self.query_engine = QueryEngine(self.features)
        return self.query_engine

    def prepare(self) -> None:
        """Build the query engine and run one query now, so the first real query is fast.

        A result whose text encoder cannot be loaded (no weights here) stays viewable in its
        colour modes; the reason is shown instead of the query box.
        """
        if self.features is None or self.query_error is not None:
            return
        try:
            self.engine.heatmap((self.default_vocabulary() or ["object"])[0])
        except PcOvsegError as err:
            self.query_error = str(err)

    def default_vocabulary(self) -> list[str]:
        if self.features is not None and self.features.class_names:
            return list(self.features.class_names)
        return []

    def heatmap(self, text: str) -> np.ndarray:
        """uint8 heat (0..255) of the displayed points; computed on all points."""
        heat = self.engine.heatmap(text)
        return np.round(heat[self.display_ids] * 255.0).astype(np.uint8)

    def labels(self, vocabulary: list[str]) -> tuple[np.ndarray, list[int]]:
        """(uint8 label per displayed point, NO_LABEL = unseen; per-class counts over all points)."""
        res = self.engine.labels(vocabulary)
        counts = np.bincount(res.labels[res.labels >= 0], minlength=len(vocabulary)).tolist()
        lab = res.labels[self.display_ids]
        return np.where(lab >= 0, lab, NO_LABEL).astype(np.uint8), counts

    def describe_point(self, display_index: int, vocabulary: list[str], k: int = 5) -> dict:
        """Everything the click panel shows about one displayed point."""
        pid = int(self.display_ids[display_index])
        c = self.cloud
        out = {"index": int(display_index), "point_id": pid,
               "xyz": [round(float(x), 4) for x in (c.xyz[pid].astype(np.float64) + c.origin)]}
        if c.rgb is not None:
            out["rgb"] = c.rgb[pid].tolist()
        if self.label_field is not None:
            out[self.label_field] = int(c.fields[self.label_field][pid])
        if self.features is None:
            return out
        fc = self.features
        out["weight"] = round(float(fc.weight[pid]), 4)
        out["view_count"] = int(fc.view_count[pid])
        if not fc.seen[pid]:
            out.update(label=None, score=0.0, topk=[], note="no view saw this point")
            return out
        if not self.queryable:
            out["note"] = self.message
        elif vocabulary:
            top = self.engine.topk(pid, vocabulary, k)
            out["topk"] = [{"name": n, "score": round(p, 4)} for n, p in top]
            out["label"], out["score"] = top[0][0], round(top[0][1], 4)
        else:
            out["note"] = "give a vocabulary for the label and top-5 classes"
        return out


def _is_feature_cloud(path: str) -> bool:
    if not path.lower().endswith(".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "header" in z.files and "features" in z.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
