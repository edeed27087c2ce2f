"""Oracle 2D predictions made from ground truth: measure the 3D pipeline without CLIP weights.

Each view's "2D prediction" is the GT label field projected into the view through its index map
(the same path a user's precomputed per-view label maps take); ``noise`` relabels a random
fraction of the view's regions (from the cheap mask source) with a random wrong class. Fusion
and querying then run unchanged.
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from .data import FeatureCloud, PointCloud, View


def load_gt(cloud: PointCloud, gt: str, class_names: list[str], *, divide: int = 1) -> np.ndarray:
    """Per-point GT ids for the oracle: ``gt`` names a field of ``cloud`` or a label file.

    Ids outside ``class_names``, ids named "ignore" and points with non-finite coordinates (the
    no-depth pixels of organised clouds) become -1.
    """
    from . import io
    from .errors import InputError

    if gt in cloud.fields:
        lab = np.asarray(cloud.fields[gt]).reshape(-1).astype(np.int64)
    elif os.path.isfile(gt):
        lab = io.read_labels(gt).reshape(-1).astype(np.int64)
    else:
        raise InputError(cloud.source, f"has no per-point field {gt!r} and no label file {gt!r} exists "
                                       f"(fields: {', '.join(cloud.fields) or 'none'})")
    if len(lab) != len(cloud):
        raise InputError(gt, f"{len(lab)} labels for {len(cloud)} points")
    lab = lab // divide
    valid = np.isfinite(cloud.xyz).all(1) & (lab >= 0) & (lab < len(class_names))
    valid &= ~np.isin(lab, [i for i, n in enumerate(class_names) if n == "ignore"])
    return np.where(valid, lab, -1)


def gt_label_map(view: View, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) int32 map of the GT label seen at each pixel; -1 where nothing or an ignored label."""
    idx = view.index
    out = np.full(idx.shape, -1, np.int32)
    hit = idx >= 0
    lab = labels[idx[hit]]
    out[hit] = np.where((lab >= 0) & (lab < num_classes), lab, -1)
    return out


def corrupt_label_map(label_map: np.ndarray, regions: np.ndarray, fraction: float, num_classes: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Relabel a random ``fraction`` of the regions (that carry labels) with a random wrong class."""
    out = label_map.copy()
    if fraction <= 0 or num_classes < 2:
        return out
    ids = np.unique(regions[(regions >= 0) & (label_map >= 0)])
    if len(ids) == 0:
        return out
    pick = ids[rng.random(len(ids)) < fraction]
    for r in pick:
        m = (regions == r) & (label_map >= 0)
        # the region's majority class is replaced by a different random class
        major = np.bincount(out[m], minlength=num_classes).argmax()
        wrong = (major + rng.integers(1, num_classes)) % num_classes
        out[m] = wrong
    return out


def oracle_view_features(views: Iterable[View], labels: np.ndarray, num_classes: int, *, noise: float = 0.0,
                         seed: int = 0, masks: str = "superpixels"):
    """Yield (view, ViewFeatures) with one-hot features from GT label maps (optionally corrupted)."""
    from .encoders import get_mask_source, label_map_features

    rng = np.random.default_rng(seed)
    mask_source = get_mask_source(masks) if noise > 0 else None
    for view in views:
        lm = gt_label_map(view, labels, num_classes)
        if mask_source is not None:
            regions = mask_source(view)
            lm = corrupt_label_map(lm, regions, noise, num_classes, rng)
        yield view, label_map_features(lm, num_classes)


def oracle_fuse(cloud: PointCloud, labels: np.ndarray, class_names: list[str], *, frames=None, noise: float = 0.0,
                max_views: int | None = None, seed: int = 0, fusion_cfg=None, views=None, **view_kw) -> FeatureCloud:
    """Fuse oracle label maps into one-hot per-point features (a label-space FeatureCloud).

    ``labels`` are ids into ``class_names``; ids outside it, or named "ignore", give no vote.
    """
    from .fusion import FeatureFusion, view_visibility
    from .config import ViewsConfig
    from .views import view_jobs

    class_names = list(class_names)
    lab = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(lab) != len(cloud):
        raise ValueError(f"{len(lab)} labels for {len(cloud)} points")
    lab = np.where(np.isin(lab, [i for i, n in enumerate(class_names) if n == "ignore"]), -1, lab)
    C = len(class_names)
    if views is None:
        jobs = view_jobs(frames if frames is not None else cloud, cloud, ViewsConfig(max_views=max_views, **view_kw))
        views = (job.make() for job in jobs)
    fusion = FeatureFusion(len(cloud), C, fusion_cfg)
    done = []
    for view, feats in oracle_view_features(views, lab, C, noise=noise, seed=seed):
        vis = view_visibility(view, cloud, fusion.cfg)
        fusion.add_weights(vis)
        done.append((vis, feats))
    fusion.fuse_views(lambda: done)  # label maps are tiny (one int map per view): keep them
    spec = "labels:" + ",".join(class_names)
    return fusion.result(cloud, encoder=spec, class_names=class_names,
                         meta={"oracle": True, "noise": noise, "views": len(done)})


class OracleLabels:
    """A view encoder whose "2D prediction" is the GT label map of each view (``encode(view)``),
    so the oracle runs through the pipeline's own cached, resumable ``fuse_scene``.

    Region noise is drawn from a generator seeded by ``seed`` and the view's name, so a view gets
    the same corruption whatever order, process or machine makes it (bench's local and Ray runs
    give identical results).
    """

    def __init__(self, labels: np.ndarray, class_names: list[str], *, noise: float = 0.0, seed: int = 0,
                 masks: str = "superpixels", instances: np.ndarray | None = None):
        from .encoders import get_encoder
        from .store import digest
        self.class_names = list(class_names)
        lab = np.asarray(labels, np.int64).reshape(-1)
        self.labels = np.where(np.isin(lab, [i for i, n in enumerate(self.class_names) if n == "ignore"]), -1, lab)
        self.noise, self.seed, self.masks = float(noise), int(seed), masks
        self.encoder = get_encoder("labels:" + ",".join(self.class_names))
        self.settings = {"oracle": digest(self.labels, length=12), "classes": self.class_names,
                         "noise": self.noise, "seed": self.seed, **({"masks": masks} if noise > 0 else {})}
        # with GT instance ids, each view's masks are the instances it shows (what a perfect SAM
        # would give; ``noise`` then also splits, merges and drops that share of them)
        self.instances = None if instances is None else np.asarray(instances, np.int64).reshape(-1)
        if self.instances is not None:
            self.settings["instances"] = digest(self.instances, length=12)

    def encode(self, view: View):
        import zlib
        from .encoders import get_mask_source, label_map_features
        C = len(self.class_names)
        lm = gt_label_map(view, self.labels, C)
        if self.instances is not None:
            return self._instance_features(view, lm, np.random.default_rng([self.seed, zlib.crc32(view.name.encode())]))
        if self.noise > 0:
            rng = np.random.default_rng([self.seed, zlib.crc32(view.name.encode())])
            lm = corrupt_label_map(lm, get_mask_source(self.masks)(view), self.noise, C, rng)
        return label_map_features(lm, C)

    def _instance_features(self, view: View, lm: np.ndarray, rng: np.random.Generator):
        """Regions = the view's (corrupted) GT instance masks, each with its majority class one-hot;
        ``noise`` of the regions get a wrong class, as label maps do."""
        from .data import ViewFeatures
        from .instances import corrupt_masks, instance_map
        C = len(self.class_names)
        masks = corrupt_masks(instance_map(view, self.instances), self.noise, rng)
        ok = masks >= 0
        regions = np.full(masks.shape, -1, np.int32)
        uniq, inv = np.unique(masks[ok], return_inverse=True)
        regions[ok] = inv
        R = len(uniq)
        feats = np.zeros((R, C), np.float16)
        lab = lm[ok]
        has = lab >= 0
        if R and has.any():
            counts = np.zeros((R, C), np.int64)
            np.add.at(counts, (inv[has], lab[has]), 1)
            cls = counts.argmax(1)
            live = counts.max(1) > 0
            if self.noise > 0 and C > 1:
                flip = live & (rng.random(R) < self.noise)
                cls[flip] = (cls[flip] + rng.integers(1, C, flip.sum())) % C
            feats[np.flatnonzero(live), cls[live]] = 1
        return ViewFeatures(view.hw, dense=None, regions=regions, region_features=feats, blend=1.0,
                            meta={"source": "oracle-instances", "num_classes": C})
