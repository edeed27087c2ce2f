"""View -> ViewFeatures: one dense CLIP pass, one mask pass, region features, per-view cache.

The region feature (mean of the dense features inside a mask, or embeddings of multi-scale
crops of the mask) is robust; the dense feature keeps detail inside large masks. Fusion
samples their blend only at the visible pixels (ViewFeatures.sample), so no full-resolution
feature map is ever built.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..data import View, ViewFeatures
from ..errors import InputError
from .base import ImageTextEncoder, get_encoder, l2_normalize
from .masks import MaskSource, get_mask_source

CACHE_VERSION = 1
MASK_FEATURES = ("pool", "crops")


def pool_regions(dense: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the bilinearly upsampled dense grid over each region's pixels, without upsampling.

    Every pixel spreads its 4 bilinear weights over grid cells; summing them per region gives a
    (R, h*w) weight matrix, and weights @ grid is the exact sum of upsampled features.
    Returns (R, D) float32 means (unnormalised) and (R,) pixel counts.
    """
    H, W = regions.shape
    h, w, D = dense.shape
    m = regions >= 0
    if not m.any():
        return np.zeros((0, D), np.float32), np.zeros(0, np.int64)
    R = int(regions.max()) + 1
    rows, cols = np.nonzero(m)
    rid = regions[rows, cols].astype(np.int64)
    y = np.clip((rows.astype(np.float32) + 0.5) * (h / H) - 0.5, 0, h - 1)
    x = np.clip((cols.astype(np.float32) + 0.5) * (w / W) - 0.5, 0, w - 1)
    y0 = np.floor(y).astype(np.int64); x0 = np.floor(x).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1); x1 = np.minimum(x0 + 1, w - 1)
    fy = y - y0; fx = x - x0
    wts = np.zeros(R * h * w, np.float64)
    for yy, xx, ww in ((y0, x0, (1 - fy) * (1 - fx)), (y0, x1, (1 - fy) * fx),
                       (y1, x0, fy * (1 - fx)), (y1, x1, fy * fx)):
        wts += np.bincount(rid * (h * w) + yy * w + xx, ww, R * h * w)
    counts = np.bincount(rid, minlength=R)
    sums = wts.reshape(R, h * w).astype(np.float32) @ dense.reshape(h * w, D).astype(np.float32)
    return sums / np.maximum(counts, 1)[:, None].astype(np.float32), counts


def mask_crops(image: np.ndarray, mask: np.ndarray, levels: int = 3, expand: float = 0.25,
               background: str = "grey") -> list[np.ndarray]:
    """OpenMask3D-style crops of one mask: its bounding box grown by ``expand`` per level.
    With background="grey" the tightest crop shows only the mask (rest mean-grey), so the
    object, not its surroundings, is embedded; wider levels keep context."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = []
    for lvl in range(levels):
        gy, gx = int((y1 - y0) * expand * lvl / 2), int((x1 - x0) * expand * lvl / 2)
        a, b, c, d = max(0, y0 - gy), min(H, y1 + gy), max(0, x0 - gx), min(W, x1 + gx)
        crop = image[a:b, c:d, :3].copy()
        if background == "grey" and lvl == 0:
            crop[~mask[a:b, c:d]] = (123, 117, 104)
        out.append(crop)
    return out


def image_digest(rgb: np.ndarray) -> str:
    """Cheap content hash (a strided subsample): detects a changed image behind the same name."""
    sub = np.ascontiguousarray(rgb[::7, ::7])
    return hashlib.sha1(sub.tobytes() + str(rgb.shape).encode()).hexdigest()[:16]


class ViewEncoder:
    """Encodes views into ViewFeatures with one dense pass + one mask pass, cached per view."""

    def __init__(self, encoder: ImageTextEncoder | str, masks: str | MaskSource | None = "superpixels",
                 mask_features: str = "pool", blend: float = 0.5, cache_dir: str | os.PathLike | None = None,
                 *, mask_kw: dict | None = None, crop_levels: int = 3, crop_expand: float = 0.25,
                 crop_background: str = "grey", max_crops: int = 64, min_region_pixels: int = 16,
                 dense: bool = True):
        self.encoder = get_encoder(encoder) if isinstance(encoder, str) else encoder
        self.masks = get_mask_source(masks, **(mask_kw or {}))
        if mask_features not in MASK_FEATURES:
            raise InputError(None, f"mask_features must be one of {', '.join(MASK_FEATURES)}, got {mask_features!r}")
        if crop_background not in ("grey", "keep"):
            raise InputError(None, f"crop_background must be grey or keep, got {crop_background!r}")
        self.mask_features, self.blend = mask_features, float(blend)
        self.crop_levels, self.crop_expand, self.crop_background = int(crop_levels), float(crop_expand), crop_background
        self.max_crops, self.min_region_pixels, self.dense = int(max_crops), int(min_region_pixels), bool(dense)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.hits = self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def settings(self) -> dict:
        """Everything that changes the output; its hash is part of every cache key."""
        s = {"version": CACHE_VERSION, "encoder": self.encoder.spec,
             "dense": getattr(self.encoder, "dense_settings", {}) if self.dense else None,
             "masks": self.masks.name, "mask_params": self.masks.params, "mask_features": self.mask_features,
             "blend": self.blend, "min_region_pixels": self.min_region_pixels}
        if self.mask_features == "crops":
            s["crops"] = [self.crop_levels, self.crop_expand, self.crop_background, self.max_crops]
        return s

    @property
    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def cache_path(self, view: View) -> Path | None:
        if self.cache_dir is None:
            return None
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (view.name or "view"))[:80]
        return self.cache_dir / f"{name}-{self.settings_hash}-{image_digest(view.rgb)}.npz"

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, view: View) -> ViewFeatures:
        path = self.cache_path(view)
        if path is not None and path.is_file():
            try:
                vf = load_view_features(path)
                self.hits += 1
                return vf
            except InputError:
                pass  # a torn or foreign file: recompute and overwrite
        self.misses += 1
        vf = self.compute(view)
        if path is not None:
            save_view_features(vf, path)
        return vf

    def encode_many(self, views: Iterable[View], progress: bool | None = None) -> Iterator[tuple[View, ViewFeatures]]:
        """Yields (view, features); cached views cost a file read, so an interrupted run resumes."""
        from tqdm.auto import tqdm
        bar = tqdm(views, desc="2D features", unit="view", disable=None if progress is None else not progress)
        for v in bar:
            yield v, self.encode(v)

    def compute(self, view: View) -> ViewFeatures:
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(view.rgb[..., :3])
        if rgb.dtype != np.uint8:
            raise InputError(view.name or None, f"view image must be uint8 RGB, got {rgb.dtype}")
        H, W = rgb.shape[:2]
        dense = self.encoder.dense_features(rgb) if (self.dense or self.mask_features == "pool") else None
        t1 = time.perf_counter()
        regions = self.masks(view)
        t2 = time.perf_counter()
        region_features = None
        if regions is not None:
            regions = np.asarray(regions, np.int32)
            if regions.shape != (H, W):
                raise ValueError(f"mask source {self.masks.name} returned {regions.shape}, expected {(H, W)}")
            counts = np.bincount(regions[regions >= 0].ravel(), minlength=int(regions.max()) + 1)
            small = counts < self.min_region_pixels
            if small.any():
                regions = np.where((regions >= 0) & small[np.maximum(regions, 0)], -1, regions).astype(np.int32)
                from .masks import relabel
                regions = relabel(regions)
            region_features = self._region_features(rgb, dense, regions)
        meta = {"encoder": self.encoder.spec, "masks": self.masks.name,
                "n_regions": 0 if region_features is None else len(region_features),
                "seconds": {"dense": round(t1 - t0, 4), "masks": round(t2 - t1, 4),
                            "regions": round(time.perf_counter() - t2, 4)}}
        return ViewFeatures((H, W), dense=None if (dense is None or not self.dense) else dense.astype(np.float16),
                            regions=regions, region_features=region_features, blend=self.blend, meta=meta)

    def _region_features(self, rgb, dense, regions) -> np.ndarray:
        R = int(regions.max()) + 1 if (regions >= 0).any() else 0
        feats = np.zeros((R, self.encoder.dim), np.float32)
        if dense is not None:
            feats = pool_regions(dense, regions)[0]
        if self.mask_features == "crops" and R:
            area = np.bincount(regions[regions >= 0].ravel(), minlength=R)
            chosen = np.argsort(-area, kind="stable")[: self.max_crops]
            crops = [c for r in chosen for c in mask_crops(rgb, regions == r, self.crop_levels, self.crop_expand,
                                                           self.crop_background)]
            emb = self.encoder.encode_crops(crops).reshape(len(chosen), self.crop_levels, -1).mean(1)
            feats[chosen] = emb
        return l2_normalize(feats).astype(np.float16)


# -- cache files ---------------------------------------------------------------------------------
def save_view_features(vf: ViewFeatures, path: str | os.PathLike) -> None:
    """Atomic write (temp file + rename): a killed run never leaves a half-written cache entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"image_hw": np.asarray(vf.image_hw, np.int64), "blend": np.float32(vf.blend),
              "meta": np.frombuffer(json.dumps(vf.meta, default=str).encode(), np.uint8)}
    if vf.dense is not None:
        arrays["dense"] = np.asarray(vf.dense, np.float16)
    if vf.regions is not None:
        arrays["regions"] = vf.regions.astype(np.int16 if vf.regions.max(initial=-1) < 32767 else np.int32)
        arrays["region_features"] = np.asarray(vf.region_features, np.float16)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def view_features_dim(path: str | os.PathLike) -> int:
    """A cached view's feature dimension from its .npy header alone (no array is read): a resumed
    run checks every entry, and fusion reads them in full later anyway."""
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            key = next(k for k in ("region_features.npy", "dense.npy") if k in names)  # ViewFeatures.dim's order
            with zf.open(key) as f:
                version = fmt.read_magic(f)
                header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                return int(header(f)[0][-1])
    except (OSError, KeyError, ValueError, IndexError, StopIteration, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a pc_ovseg view-feature file ({type(exc).__name__})") from None


def load_view_features(path: str | os.PathLike) -> ViewFeatures:
    try:
        with np.load(path, allow_pickle=False) as z:
            return ViewFeatures(tuple(int(v) for v in z["image_hw"]),
                                dense=z["dense"] if "dense" in z.files else None,
                                regions=z["regions"].astype(np.int32) if "regions" in z.files else None,
                                region_features=z["region_features"] if "region_features" in z.files else None,
                                blend=float(z["blend"]), meta=json.loads(bytes(z["meta"]).decode()))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a pc_ovseg view-feature file ({type(exc).__name__})") from None
