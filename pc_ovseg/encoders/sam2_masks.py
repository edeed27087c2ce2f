"""SAM 2 / SAM 2.1 as a mask source (``pip install pc_ovseg[sam2]``).

Checkpoints of every size (tiny, small, base_plus, large; SAM 2 or SAM 2.1) load from a local
file through one path: the size is read from the state dict's shapes (``model="auto"``), the
version from its keys, and the model is built by the ``sam2`` package's own builder from the yaml
config it ships, then given the weights (read with ``store.load_checkpoint``: weights only).

Two sources share one decoder loop (:class:`Sam2Masks`):

* ``sam2``: automatic masks from a ``points_per_side``^2 grid of prompts;
* ``sam2_3d``: prompts from visible 3D points (:func:`masks.prompt_points`), so the same points
  prompt every view that sees them and the masks agree across views (as ``sam3d``).

The image is encoded once; prompts are decoded in batches of ``points_per_batch``; per prompt the
best of SAM's 3 masks, the IoU / stability thresholds and box NMS are all decided on the
decoder's low-resolution logits, and only the masks kept are upsampled to the view. The decoded
logits are exactly those of the package's ``SAM2ImagePredictor`` (tested).
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..data import View
from ..errors import InputError, WeightsError
from ..store import load_checkpoint
from .clip import resolve_device
from .masks import MaskSource, paint_masks, prompt_points, register_masks

SIZES = ("tiny", "small", "base_plus", "large")
_CFG_SUFFIX = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# Hiera trunk (embed dim, blocks) of each size, as in the shipped configs
_TRUNKS = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}
SAM2_URLS = {
    "2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt",
    "2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_{size}.pt",
}


def official_files(version: str = "2.1") -> list[str]:
    stem = "sam2.1_hiera" if version == "2.1" else "sam2_hiera"
    return [f"{stem}_{s}.pt" for s in SIZES]


def config_name(size: str, version: str = "2.1") -> str:
    """The sam2 package's yaml config for a size, e.g. configs/sam2.1/sam2.1_hiera_t.yaml."""
    if size not in SIZES:
        raise InputError(None, f"unknown SAM 2 size {size!r}; choose {', '.join(SIZES)}")
    v = "sam2.1" if version == "2.1" else "sam2"
    return f"configs/{v}/{v}_hiera_{_CFG_SUFFIX[size]}.yaml"


def _require_sam2():
    try:
        import sam2  # noqa: F401
        from sam2.build_sam import build_sam2  # noqa: F401
    except ImportError:
        raise WeightsError("SAM 2 masks need the sam2 package: pip install 'pc_ovseg[sam2]' (on a CPU-only "
                           "machine: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2)") from None


def build_sam2_model(size: str = "tiny", version: str = "2.1", image_size: int = 1024, device: str = "cpu"):
    """A SAM2Base of this size with random weights, built by the sam2 package from its config;
    ``image_size`` (a multiple of 32) overrides the config's 1024 input (the weights do not depend on it)."""
    _require_sam2()
    from sam2.build_sam import build_sam2
    if int(image_size) % 32 or image_size < 128:
        raise InputError(None, f"SAM 2 image size must be a multiple of 32 and >= 128, got {image_size}")
    extra = [] if int(image_size) == 1024 else [f"++model.image_size={int(image_size)}"]
    return build_sam2(config_name(size, version), None, device=device, hydra_overrides_extra=extra)


def make_random_sam2_checkpoint(path, size: str = "tiny", version: str = "2.1", seed: int = 0) -> str:
    """A SAM 2 checkpoint with random weights of the real architecture (tests, benchmarks), saved as the
    official files are ({"model": state dict}); returns the path."""
    import torch
    from ..store import atomic_write
    torch.manual_seed(seed)
    sd = build_sam2_model(size, version).state_dict()
    with atomic_write(path) as tmp:
        torch.save({"model": sd}, tmp)
    return str(path)


def infer_size(sd: dict) -> tuple[str, str]:
    """(size, version) of a SAM 2 state dict: the trunk's width and depth, and SAM 2.1's extra keys."""
    w = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None:
        raise KeyError("image_encoder.trunk.patch_embed.proj.weight")
    blocks = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))),
                     default=-1)
    size = _TRUNKS.get((int(w.shape[0]), blocks))
    if size is None:
        raise ValueError(f"Hiera trunk of width {int(w.shape[0])} and {blocks} blocks is none of "
                         f"{', '.join(SIZES)}")
    return size, ("2.1" if "no_obj_embed_spatial" in sd else "2")


def _weights_help() -> str:
    return (f"official files: {', '.join(official_files())} from {SAM2_URLS['2.1'].format(size='<size>')} "
            f"(SAM 2: {SAM2_URLS['2'].format(size='<size>')})")


def load_sam2(checkpoint: str | None, model: str = "auto", device: str = "cpu", image_size: int = 1024):
    """A SAM2Base in eval mode on ``device``; ``model`` is auto (inferred) or a size name."""
    if not checkpoint:
        raise WeightsError(
            "SAM 2 masks need a checkpoint and none can be downloaded here: pass --sam2-checkpoint FILE "
            f"(e.g. sam2.1_hiera_tiny.pt from {SAM2_URLS['2.1'].format(size='tiny')}; {_weights_help()}), "
            "or use --masks superpixels")
    if not os.path.isfile(checkpoint):
        raise WeightsError(f"SAM 2 checkpoint {checkpoint} not found: pass --sam2-checkpoint with an existing file "
                           f"({_weights_help()})")
    if model not in ("auto", *SIZES):
        raise InputError(None, f"unknown SAM 2 model {model!r}; choose auto, {', '.join(SIZES)}")
    _require_sam2()
    sd = _state_dict(checkpoint)
    try:
        size, version = infer_size(sd)
        if model != "auto" and model != size:
            raise ValueError(f"it holds a {size} model")
        net = build_sam2_model(size, version, image_size, "cpu")
        net.load_state_dict(sd, strict=True)
    except (KeyError, RuntimeError, ValueError, AttributeError, TypeError) as exc:
        what = "SAM 2" if model == "auto" else f"SAM 2 {model}"
        raise InputError(checkpoint, f"not a {what} checkpoint ({str(exc).splitlines()[0][:200]})") from None
    net.pc_ovseg_size, net.pc_ovseg_version = size, version
    return net.to(device).eval()


_SIZE_CACHE: dict = {}


def _state_dict(checkpoint: str, mmap: bool = False) -> dict:
    sd = load_checkpoint(checkpoint, what="SAM 2 checkpoint", mmap=mmap)
    if isinstance(sd, dict):
        for key in ("model", "state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
    return sd


def checkpoint_size(checkpoint: str | None) -> str | None:
    """The size (tiny ... large) of a SAM 2 checkpoint file, read from its shapes (memory-mapped, cached
    by file stamp); None without a checkpoint. A missing or foreign file is the same error as loading it."""
    from ..store import file_stamp
    if not checkpoint:
        return None
    if not os.path.isfile(checkpoint):
        load_sam2(checkpoint)  # raises the not-found error
    key = tuple(file_stamp(checkpoint))
    if key not in _SIZE_CACHE:
        try:
            _SIZE_CACHE[key] = infer_size(_state_dict(checkpoint, mmap=True))[0]
        except (KeyError, ValueError, AttributeError, TypeError) as exc:
            raise InputError(checkpoint, f"not a SAM 2 checkpoint ({str(exc).splitlines()[0][:200]})") from None
    return _SIZE_CACHE[key]


class Sam2Masks:
    """One SAM 2 model's image embedding and batched point decoding, independent of any View."""

    def __init__(self, model, points_per_batch: int = 4):
        from sam2.utils.transforms import SAM2Transforms
        self.model = model
        self.image_size = int(model.image_size)
        self.transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=0.0)
        self.points_per_batch = int(points_per_batch)
        self.mask_threshold = 0.0

    @property
    def device(self):
        return self.model.device

    def embed(self, rgb: np.ndarray):
        """The image's share of the decoder (:class:`sam2_decoder.SharedImage`), from the embedding
        SAM2ImagePredictor.set_image computes, for any input size (the predictor assumes 1024)."""
        import torch
        from .sam2_decoder import SharedImage
        m = self.model
        with torch.inference_mode():
            x = self.transforms(np.ascontiguousarray(rgb[..., :3]))[None].to(self.device)
            _, feats, _, sizes = m._prepare_backbone_features(m.forward_image(x))
            if m.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + m.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats, sizes)]
            pe = m.sam_prompt_encoder.get_dense_pe()
            dense = m.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *pe.shape[-2:])
            return SharedImage(m.sam_mask_decoder, maps[-1], dense, pe, maps[:-1])

    def decode(self, image, xy: np.ndarray, hw: tuple[int, int], pred_iou_thresh: float | None = None):
        """Point prompts (P, 2) as (x, y) image pixels, in batches of ``points_per_batch`` ->
        (best-of-3 low-res logits (K, h, w), their IoU (K,), prompt index (K,), all IoUs (P, 3)) for
        the K prompts whose best IoU >= ``pred_iou_thresh`` (None: all P). The logits and IoUs are
        SAM2ImagePredictor.predict's for (P, 1, 2) prompts."""
        import torch
        from .sam2_decoder import decode_points
        H, W = hw
        out = [], [], [], []
        with torch.inference_mode():
            for i in range(0, len(xy), self.points_per_batch):
                pts = torch.as_tensor(np.asarray(xy[i:i + self.points_per_batch], np.float32), device=self.device)
                coords = pts / torch.tensor([W, H], dtype=torch.float32, device=self.device)
                coords = (coords * self.image_size)[:, None]
                logits, iou, idx, iou_all = decode_points(self.model, image, coords, pred_iou_thresh)
                for o, v in zip(out, (logits, iou, idx + i, iou_all)):
                    o.append(v)
        return tuple(torch.cat(o) for o in out)

    def upsample(self, logits, hw: tuple[int, int]):
        """(K, h, w) low-res logits -> (K, H, W) bool masks, as the predictor's postprocess_masks."""
        import torch
        import torch.nn.functional as F
        with torch.inference_mode():
            return F.interpolate(logits[:, None].float(), hw, mode="bilinear", align_corners=False)[:, 0] \
                > self.mask_threshold

    def select(self, low, iou, stability_thresh: float, nms_thresh: float, stability_offset: float = 1.0):
        """Stability threshold and box NMS on the low-res logits of the prompts' best masks.
        Returns (kept logits (K, h, w), their scores (K,))."""
        import torch
        from sam2.utils.amg import batched_mask_to_box, calculate_stability_score
        from torchvision.ops import nms
        thr = self.mask_threshold
        with torch.inference_mode():
            stab = calculate_stability_score(low, thr, stability_offset)
            ok = (stab >= stability_thresh) & (low > thr).flatten(1).any(1)
            low, iou = low[ok], iou[ok].float()
            if len(low) == 0:
                return low, iou
            # the low-res grid is the whole view resized to a square: box IoU is invariant to that scaling
            keep = nms(batched_mask_to_box(low > thr).float(), iou, nms_thresh)
            return low[keep], iou[keep]

    def masks(self, rgb: np.ndarray, xy: np.ndarray, pred_iou_thresh: float = 0.8, stability_thresh: float = 0.95,
              nms_thresh: float = 0.7, min_area: int = 0, timings: dict | None = None) -> np.ndarray:
        """(K, H, W) bool masks kept for prompts ``xy`` (x, y pixels) on an image."""
        import time
        hw = rgb.shape[:2]
        t0 = time.perf_counter()
        image = self.embed(rgb)
        t1 = time.perf_counter()
        out = np.zeros((0,) + hw, bool)
        if len(xy):
            low, iou, _, _ = self.decode(image, xy, hw, pred_iou_thresh)
            t2 = time.perf_counter()
            logits, _ = self.select(low, iou, stability_thresh, nms_thresh)
            if len(logits):
                m = self.upsample(logits, hw)
                out = m[m.flatten(1).sum(1) >= max(1, min_area)].cpu().numpy()
        else:
            t2 = t1
        if timings is not None:
            timings.update(encoder=t1 - t0, decoder=t2 - t1, select=time.perf_counter() - t2)
        return out


class _Sam2Base(MaskSource):
    def __init__(self, checkpoint: str | None = None, model: str = "auto", device: str = "auto",
                 image_size: int = 1024, pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 points_per_batch: int = 4, min_area: int = 0, nms_thresh: float = 0.7, sam2=None, **_):
        self.checkpoint, self.model = checkpoint, model
        self.device = resolve_device(device)
        self.image_size = int(image_size)
        if sam2 is not None:  # an already built SAM2Base (benchmarks, tests): no file to key on
            net = sam2.to(self.device).eval()
        else:
            net = load_sam2(checkpoint, model, self.device, self.image_size)
        self.image_size = int(net.image_size)
        self.size = getattr(net, "pc_ovseg_size", None)
        self.sam2 = Sam2Masks(net, points_per_batch)
        self.pred_iou_thresh, self.stability_score_thresh = float(pred_iou_thresh), float(stability_score_thresh)
        self.min_area, self.nms_thresh = int(min_area), float(nms_thresh)
        self.last_timings: dict = {}

    @property
    def params(self) -> dict:
        from ..store import file_stamp
        stamp = file_stamp(self.checkpoint) if self.checkpoint else [f"in-memory:{id(self.sam2.model):x}"]
        return {"checkpoint": stamp, "model": self.model, "image_size": self.image_size,
                "pred_iou_thresh": self.pred_iou_thresh, "stability_score_thresh": self.stability_score_thresh,
                "nms_thresh": self.nms_thresh, "min_area": self.min_area}

    def prompts(self, view: View) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, view: View) -> np.ndarray:
        xy = self.prompts(view)
        self.last_timings = {}
        masks = self.sam2.masks(view.rgb, xy, self.pred_iou_thresh, self.stability_score_thresh,
                                self.nms_thresh, self.min_area, timings=self.last_timings)
        return paint_masks(masks, view.hw)


def grid_points(hw: tuple[int, int], n: int) -> np.ndarray:
    """SAM's automatic grid (cell centres of an n x n layout) as (x, y) pixels of an image."""
    from sam2.utils.amg import build_point_grid
    H, W = hw
    return build_point_grid(int(n)) * np.array([W, H], np.float64)


@register_masks("sam2")
class Sam2Automatic(_Sam2Base):
    """SAM 2 automatic masks: a ``points_per_side``^2 grid of prompts, selected on low-res logits."""

    def __init__(self, checkpoint=None, model="auto", device="auto", points_per_side: int = 32, **kw):
        super().__init__(checkpoint, model, device, **kw)
        self.points_per_side = int(points_per_side)

    @property
    def params(self) -> dict:
        return {**super().params, "points_per_side": self.points_per_side}

    def prompts(self, view: View) -> np.ndarray:
        return grid_points(view.hw, self.points_per_side)


@register_masks("sam2_3d")
class Sam2From3D(_Sam2Base):
    """SAM 2 prompted with visible 3D points (as ``sam3d``): at most ``max_prompts`` per view, the
    same points in every view that sees them."""

    def __init__(self, checkpoint=None, model="auto", device="auto", grid: int = 16, max_prompts: int = 256, **kw):
        super().__init__(checkpoint, model, device, **kw)
        self.grid, self.max_prompts = int(grid), int(max_prompts)

    @property
    def params(self) -> dict:
        return {**super().params, "grid": self.grid, "max_prompts": self.max_prompts}

    def prompts(self, view: View) -> np.ndarray:
        _, px = prompt_points(view, self.grid, self.max_prompts)
        return np.asarray(px, np.float64)[:, ::-1].copy() if len(px) else np.zeros((0, 2))
