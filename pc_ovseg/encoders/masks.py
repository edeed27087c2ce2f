"""Mask sources: each turns a View into an (H, W) int32 region map (-1 = no region).

Masks group pixels whose CLIP features should be pooled into one region feature. SAM masks
overlap; a region map keeps one region per pixel by painting larger masks first, so the
smallest (most specific) mask covering a pixel wins.
"""
from __future__ import annotations

import numpy as np

from ..data import View
from ..errors import InputError
from ..registry import Registry
from .clip import resolve_device
from .superpixels import slic

_MASKS = Registry(attr="name")


def register_masks(name: str):
    return _MASKS.register(name)


def mask_sources() -> list[str]:
    return _MASKS.names()


def get_mask_source(name: "str | MaskSource | None", **kw) -> "MaskSource":
    if isinstance(name, MaskSource):
        return name
    name = name or "none"
    if name not in _MASKS:
        raise InputError(None, f"unknown mask source {name!r}; choose one of {', '.join(mask_sources())}")
    return _MASKS[name](**kw)


class MaskSource:
    """Produces a region map for a view; ``params`` (JSON-able) enter the per-view cache key."""

    name = ""

    @property
    def params(self) -> dict:
        return {}

    def __call__(self, view: View) -> np.ndarray | None:
        raise NotImplementedError


def paint_masks(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool overlapping masks -> (H, W) int32 map, smaller masks on top, ids 0..R-1."""
    regions = np.full(hw, -1, np.int32)
    if len(masks) == 0:
        return regions
    areas = masks.reshape(len(masks), -1).sum(1)
    for k in np.argsort(-areas, kind="stable"):
        regions[masks[k]] = k
    return relabel(regions)


def relabel(regions: np.ndarray) -> np.ndarray:
    """Consecutive ids 0..R-1 for the regions present; -1 stays -1."""
    out = np.full(regions.shape, -1, np.int32)
    m = regions >= 0
    if m.any():
        _, inv = np.unique(regions[m], return_inverse=True)
        out[m] = inv.astype(np.int32)
    return out


@register_masks("none")
class NoMasks(MaskSource):
    """Dense features only."""

    def __call__(self, view: View) -> None:
        return None


@register_masks("superpixels")
class Superpixels(MaskSource):
    """SLIC superpixels (no network): ~0.2 s per 640x480 view on one CPU core."""

    def __init__(self, n_segments: int = 200, compactness: float = 10.0, iters: int = 5, work_side: int = 240, **_):
        self.n_segments, self.compactness, self.iters, self.work_side = int(n_segments), float(compactness), int(iters), int(work_side)

    @property
    def params(self) -> dict:
        return {"n_segments": self.n_segments, "compactness": self.compactness, "iters": self.iters,
                "work_side": self.work_side}

    def __call__(self, view: View) -> np.ndarray:
        return slic(view.rgb, self.n_segments, self.compactness, self.iters, self.work_side)


@register_masks("segments3d")
class ProjectedSegments(MaskSource):
    """3D segments (per point or face id, e.g. from a geometric over-segmentation) seen through
    ``View.index``: the regions then agree across views by construction."""

    def __init__(self, segments: np.ndarray | None = None, **_):
        if segments is None:
            raise InputError(None, "masks 'segments3d' need per-point segment ids (segments=...)")
        self.segments = np.asarray(segments, np.int64).ravel()
        import hashlib  # a stable digest (not hash(), which changes per process) so caches resume
        self._key = f"{len(self.segments)}:{hashlib.sha1(self.segments.tobytes()).hexdigest()[:16]}"

    @property
    def params(self) -> dict:
        return {"segments": self._key}

    def __call__(self, view: View) -> np.ndarray:
        idx = view.index
        ok = (idx >= 0) & (idx < len(self.segments))
        out = np.full(idx.shape, -1, np.int64)
        out[ok] = self.segments[idx[ok]]
        return relabel(out)


class _SamBase(MaskSource):
    def __init__(self, checkpoint: str | None = None, model: str = "auto", device: str = "auto",
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 points_per_batch: int = 64, min_area: int = 0, sam=None, **_):
        from .sam import load_sam
        self.checkpoint, self.model = checkpoint, model
        self.device = resolve_device(device)
        # an already built Sam (benchmarks, callers holding one) skips loading; it has no file to key on
        self.sam = sam.to(self.device).eval() if sam is not None else load_sam(checkpoint, model, self.device)
        self.pred_iou_thresh, self.stability_score_thresh = float(pred_iou_thresh), float(stability_score_thresh)
        self.points_per_batch, self.min_area = int(points_per_batch), int(min_area)

    @property
    def params(self) -> dict:
        import os
        ckpt = os.path.abspath(self.checkpoint) if self.checkpoint else f"in-memory:{id(self.sam):x}"
        size = os.stat(self.checkpoint).st_size if self.checkpoint else 0
        return {"checkpoint": ckpt, "ckpt_size": size, "model": self.model,
                "pred_iou_thresh": self.pred_iou_thresh, "stability_score_thresh": self.stability_score_thresh,
                "min_area": self.min_area}


@register_masks("sam")
class SamAutomatic(_SamBase):
    """SAM automatic mask generation on a grid of ``points_per_side``^2 prompts."""

    def __init__(self, checkpoint=None, model="auto", device="auto", points_per_side: int = 32, **kw):
        super().__init__(checkpoint, model, device, **kw)
        from segment_anything import SamAutomaticMaskGenerator
        self.points_per_side = int(points_per_side)
        self.generator = SamAutomaticMaskGenerator(
            self.sam, points_per_side=self.points_per_side, points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh, stability_score_thresh=self.stability_score_thresh,
            min_mask_region_area=self.min_area)

    @property
    def params(self) -> dict:
        return {**super().params, "points_per_side": self.points_per_side}

    def __call__(self, view: View) -> np.ndarray:
        import torch
        with torch.inference_mode():
            anns = self.generator.generate(np.ascontiguousarray(view.rgb[..., :3]))
        masks = np.stack([a["segmentation"] for a in anns]) if anns else np.zeros((0,) + view.hw, bool)
        return paint_masks(masks, view.hw)


def prompt_points(view: View, grid: int = 16, max_prompts: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Visible 3D points to prompt SAM with: in each cell of a grid x grid layout over the image,
    the visible point with the smallest hash of its id. The hash ranks points the same way in every
    view, so a point chosen in one view tends to be chosen again in the next and the masks agree.
    Returns (point ids (P,), pixels (P, 2) row/col)."""
    ids = np.asarray(view.point_ids, np.int64)
    px = np.asarray(view.pixels)
    if len(ids) == 0:
        return ids, px.reshape(0, 2)
    H, W = view.hw
    key = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    cell = (px[:, 0].astype(np.int64) * grid // H) * grid + px[:, 1].astype(np.int64) * grid // W
    order = np.lexsort((key, cell))
    first = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
    if len(first) > max_prompts:
        first = first[np.argsort(key[first], kind="stable")[:max_prompts]]
    return ids[first], px[first]


@register_masks("sam3d")
class SamFrom3D(_SamBase):
    """SAM prompted with visible 3D points (one image encoding, ``max_prompts`` decoder prompts
    in batches of ``points_per_batch``), deduplicated by box NMS like automatic generation."""

    def __init__(self, checkpoint=None, model="auto", device="auto", grid: int = 16, max_prompts: int = 256,
                 nms_thresh: float = 0.7, **kw):
        super().__init__(checkpoint, model, device, **kw)
        from segment_anything import SamPredictor
        self.grid, self.max_prompts, self.nms_thresh = int(grid), int(max_prompts), float(nms_thresh)
        self.predictor = SamPredictor(self.sam)

    @property
    def params(self) -> dict:
        return {**super().params, "grid": self.grid, "max_prompts": self.max_prompts, "nms_thresh": self.nms_thresh}

    def __call__(self, view: View) -> np.ndarray:
        import torch
        from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score
        from torchvision.ops import nms
        pid, px = prompt_points(view, self.grid, self.max_prompts)
        if len(pid) == 0:
            return np.full(view.hw, -1, np.int32)
        # Selection (best of 3, thresholds, NMS) runs on the decoder's low-resolution logits;
        # only the surviving masks are upsampled to the image (the costly part on a CPU).
        thr = self.sam.mask_threshold
        keep_logits, keep_scores = [], []
        with torch.inference_mode():
            self.predictor.set_image(np.ascontiguousarray(view.rgb[..., :3]))
            for i in range(0, len(pid), self.points_per_batch):
                xy = torch.as_tensor(px[i:i + self.points_per_batch, ::-1].astype(np.float32).copy(), device=self.device)
                coords = self.predictor.transform.apply_coords_torch(xy, view.hw)[:, None]
                labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=self.device)
                sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
                low, iou = self.sam.mask_decoder(
                    image_embeddings=self.predictor.features, image_pe=self.sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
                best = iou.argmax(1)
                r = torch.arange(len(best), device=self.device)
                low, iou = low[r, best], iou[r, best]
                stab = calculate_stability_score(low, thr, 1.0)
                ok = (iou >= self.pred_iou_thresh) & (stab >= self.stability_score_thresh) & \
                     (low > thr).flatten(1).any(1)
                keep_logits.append(low[ok])
                keep_scores.append(iou[ok].float())
            logits, scores = torch.cat(keep_logits), torch.cat(keep_scores)
            if len(logits) == 0:
                return np.full(view.hw, -1, np.int32)
            # the low-res grid covers the padded square input: one scale for both axes, so box IoU holds
            keep = nms(batched_mask_to_box(logits > thr).float(), scores, self.nms_thresh)
            masks = self.sam.postprocess_masks(logits[keep][:, None], self.predictor.input_size,
                                               self.predictor.original_size)[:, 0] > thr
            masks = masks[masks.flatten(1).sum(1) >= max(1, self.min_area)]
        return paint_masks(masks.cpu().numpy(), view.hw)
