"""What the viewer shows: a cloud, its display subsample, and (for results) a query engine.

Queries always run on every point; only their answer is cut down to the displayed subset
(``display_ids``), so a 20M-point result stays interactive while labels stay exact.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..colors import palette
from ..data import FeatureCloud, PointCloud
from ..errors import InputError, PcOvsegError, check_input_path
from .up import AXES, detect_up, up_vector

if TYPE_CHECKING:
    from ..labels import LabelSet
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
    up: str = "auto"                      # an AXES name, or "auto" (pc_ovseg.viewer.up.detect_up)
    #: ``--labels``: a result's label view labels with it; a plain cloud's label field holds its
    #: ids (its raw dataset ids with ``remap``)
    labelset: "LabelSet | None" = None
    remap: bool = False
    #: the result header an export declares (pc_ovseg.export): its prediction field and classes
    result_header: dict | None = None
    #: 3D instances of a result (pc_ovseg.instances; ``instances.npz`` beside a fused.npz)
    instances: "Instances | None" = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_feature_cloud(cls, fc: FeatureCloud, **kw) -> "ViewerScene":
        return cls(fc.cloud, fc, **kw)

    @classmethod
    def from_path(cls, path, *, layout: str | None = None, **kw) -> "ViewerScene":
        """A FeatureCloud .npz (fused or distilled) or any cloud ``pc_ovseg.io.read_cloud`` reads;
        an export of ``pc-ovseg run`` shows its prediction in the classes it declares."""
        from ..data import is_feature_file
        from ..tiles import INDEX, TiledResult
        if os.path.isdir(str(path)) and os.path.isfile(os.path.join(str(path), INDEX)):
            path = os.path.join(str(path), INDEX)
        p = check_input_path(path)
        kw.setdefault("title", os.path.basename(p))
        if p.endswith(INDEX):  # a tiled run: a voxel level of detail of every tile, at the display budget
            return cls.from_feature_cloud(TiledResult(p).lod(kw.get("max_display_points") or 1_000_000), **kw)
        if p.lower().endswith(".npz") and is_feature_file(p):
            fc = FeatureCloud.load(p)
            beside = os.path.join(os.path.dirname(p), "instances.npz")
            if "instances" not in kw and os.path.isfile(beside):
                from ..instances import Instances
                inst = Instances.load(beside)
                kw["instances"] = inst if len(inst.ids) == len(fc.cloud) else None
            return cls.from_feature_cloud(fc, **kw)
        from ..export import labelset_from_header, read_result_header
        from ..io import read_cloud  # lazily: a result needs no cloud readers
        cloud = read_cloud(p, layout=layout)  # meshes come back as their vertices
        if len(cloud) == 0:
            raise InputError(p, "the cloud has no points")
        header = read_result_header(p)
        if header is not None:
            declared = labelset_from_header(header, p)
            given = kw.get("labelset")
            if given is not None and given.names != declared.names:
                raise InputError(p, f"declares its classes ({declared.name}: {', '.join(declared.names[:4])}, "
                                    f"...); leave --labels out")
        return cls(cloud, None, result_header=header, **kw)

    def __post_init__(self):
        if self.features is not None and len(self.features.features) != len(self.cloud):
            raise ValueError("features and cloud differ in length")
        if self.query_engine is not None and self.query_engine.fc is not self.features:
            raise ValueError("query_engine was built for another feature cloud")
        if self.max_display_points < 1:
            raise ValueError("max_display_points must be >= 1")
        if self.instances is not None and len(self.instances.ids) != len(self.cloud):
            raise ValueError("instances and cloud differ in length")
        if self.up != "auto" and self.up not in AXES:
            raise ValueError(f"up must be 'auto' or one of {', '.join(AXES)}, got {self.up!r}")

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
    def up_axis(self) -> tuple[np.ndarray, str]:
        """(unit up vector, what decided it) that the page orbits around."""
        if self.up != "auto":
            return up_vector(self.up), "--up"
        return detect_up(self.cloud)

    @cached_property
    def label_field(self) -> str | None:
        """The integer label field shown: the prediction an export declares, else the first of
        LABEL_FIELDS (an export's carried-over input fields are prefixed ``input_``)."""
        declared = (self.result_header or {}).get("pred_field")
        for name in ([declared] if declared else []) + list(LABEL_FIELDS):
            v = self.cloud.fields.get(name)
            if v is not None and v.ndim == 1 and np.issubdtype(v.dtype, np.integer):
                return name
        return None

    @cached_property
    def field_legend(self) -> dict | None:
        """The label field's classes: ``names``, ``colors`` and ``counts`` (over all points), and
        ``none``, the name of points in no class, with ``none_count``; ``index`` is each point's
        class position (-1: none).

        Declared by an export: its classes and colours, -1 = unseen. With ``labelset``: its class
        names and palette, so "label 7" reads as class 7 (raw id 7 with ``remap``). Else each
        value is its own class, "label 7".
        """
        if self.label_field is None:
            return None
        values = self.cloud.fields[self.label_field].astype(np.int64)
        none = None
        if self.result_header is not None:
            from ..export import labelset_from_header
            ls = labelset_from_header(self.result_header)
            ids, names, none = ls.ids, ls.names, "unseen"
            colors = _header_colors(self.result_header, names)
        elif self.labelset is not None:
            from ..labels import remap_labels
            ls = self.labelset
            ids, names, none = ls.ids, ls.names, f"not a {ls.name} class"
            colors = palette(len(names)).tolist()
            if self.remap:
                values = remap_labels(values, ls)
        else:
            ids = np.unique(values)[:NO_LABEL]  # more is unreadable anyway
            names = [f"{self.label_field} {int(v)}" for v in ids]
            colors = palette(len(names)).tolist()
        pos = np.clip(np.searchsorted(ids, values), 0, max(len(ids) - 1, 0))
        index = np.where(ids[pos] == values, pos, -1)
        counts = np.bincount(index[index >= 0], minlength=len(ids))
        if len(ids) >= NO_LABEL:  # a huge label set: only its classes present fit in a byte
            keep = np.flatnonzero(counts)[:NO_LABEL - 1]
            rank = np.full(len(ids), -1)
            rank[keep] = np.arange(len(keep))
            index = np.where(index >= 0, rank[np.maximum(index, 0)], -1)
            names, colors, counts = [names[k] for k in keep], [colors[k] for k in keep], counts[keep]
        return {"names": names, "colors": colors, "counts": counts.tolist(), "index": index,
                "none": none, "none_count": int((index < 0).sum())}

    def field_labels(self) -> np.ndarray | None:
        """A plain cloud's integer label field as uint8 positions in ``field_legend`` (NO_LABEL: none)."""
        legend = self.field_legend
        if legend is None:
            return None
        idx = legend["index"][self.display_ids]
        return np.where(idx >= 0, idx, NO_LABEL).astype(np.uint8)

    # -- instances ------------------------------------------------------------------------------
    def instance_ids(self) -> np.ndarray | None:
        """int32 instance of each displayed point (-1: none)."""
        if self.instances is None:
            return None
        return np.ascontiguousarray(self.instances.ids[self.display_ids], np.int32)

    def instance_info(self) -> dict | None:
        """Count, colours (those of instances.ply), scores and boxes relative to ``centre``."""
        inst = self.instances
        if inst is None:
            return None
        boxes = inst.boxes(self.cloud) - (self.centre + self.cloud.origin)
        return {"count": len(inst), "colors": palette(len(inst) + 20)[20:].tolist(),
                "scores": [round(float(x), 4) for x in inst.scores],
                "boxes": np.round(boxes, 4).tolist()}

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
        """Build the query engine, load its text encoder and run one query now, so the first real
        query is fast: the engine and its encoder then serve every query of the server's lifetime
        (texts seen before come from the disk cache the CLI shares).

        A result whose text encoder cannot be loaded (no weights here) stays viewable in its
        colour modes; the reason is shown instead of the query box.
        """
        if self.features is None or self.query_error is not None:
            return
        try:
            self.engine.load_text_encoder()  # even if the warm-up query below is a cache hit
            self.engine.heatmap((self.default_vocabulary() or ["object"])[0])
        except PcOvsegError as err:
            self.query_error = str(err)

    @cached_property
    def result_labelset(self) -> "LabelSet | None":
        """The label set of a result's label view: ``labelset``, else the one its exports were
        labelled with (its result header), so the view shows the exports' labels and colours."""
        if self.features is None:
            return None
        if self.labelset is None and self.features.labelset:
            from ..export import labelset_from_header
            return labelset_from_header(self.features.labelset)
        return self.labelset

    def default_vocabulary(self) -> list[str]:
        if self.result_labelset is not None:
            return list(self.result_labelset.names)
        if self.features is not None and self.features.class_names:
            return list(self.features.class_names)
        return []

    def label_colors(self, vocabulary: list[str]) -> list[list[int]]:
        """The colours of a vocabulary's classes: the result header's for its own label set, else
        the export palette by position (what ``pc-ovseg query --labels`` would write)."""
        header = self.features.labelset if self.features is not None else None
        if header and self.labelset is None and vocabulary == self.default_vocabulary():
            return _header_colors(header, vocabulary)
        return palette(len(vocabulary)).tolist()

    def heatmap(self, text: str) -> np.ndarray:
        """uint8 heat (0..255) of the displayed points; computed on all points."""
        heat = self.engine.heatmap(text)
        return np.round(heat[self.display_ids] * 255.0).astype(np.uint8)

    def labels(self, vocabulary: list[str]) -> tuple[np.ndarray, list[int], int]:
        """(uint8 label per displayed point, NO_LABEL = unseen; per-class counts and the unseen
        count, over all points). The result's own label set labels with its prompts, as its
        exports were."""
        ls = self.result_labelset
        res = self.engine.labels(ls if ls is not None and vocabulary == ls.names else vocabulary)
        seen = res.labels >= 0
        counts = np.bincount(res.labels[seen], minlength=len(vocabulary)).tolist()
        lab = res.labels[self.display_ids]
        return np.where(lab >= 0, lab, NO_LABEL).astype(np.uint8), counts, int((~seen).sum())

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
            legend = self.field_legend
            if legend["none"] is not None:  # named classes: say which
                k = int(legend["index"][pid])
                out["class"] = legend["names"][k] if k >= 0 else legend["none"]
        if self.instances is not None and self.instances.ids[pid] >= 0:
            kk = int(self.instances.ids[pid])
            out["instance"] = kk
            out["instance_points"] = int((self.instances.ids == kk).sum())
            out["instance_score"] = round(float(self.instances.scores[kk]), 4)
            if self.queryable and vocabulary and self.instances.features is not None:
                lab = self.engine.label_instances(self.instances, vocabulary, k=k)
                out["instance_topk"] = [{"name": n, "score": round(p, 4)} for n, p in lab.top[kk]]
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


def _header_colors(header: dict, names: list[str]) -> list[list[int]]:
    """Colours a result header gives its classes (pc_ovseg.export.result_header), by name."""
    given = {str(c.get("name")): c.get("rgb") for c in header.get("classes", [])}
    pal = palette(len(names)).tolist()
    return [[int(x) for x in given[n]] if isinstance(given.get(n), list) and len(given[n]) == 3 else pal[k]
            for k, n in enumerate(names)]
