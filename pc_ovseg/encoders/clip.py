"""CLIP through open_clip, with training-free dense features.

CLIP's last-layer patch tokens localise poorly: the last block's query-key attention makes
every patch attend to the same few global tokens, and its residual/FFN carry that global
signal into every token. ClearCLIP / SCLIP / NACLIP fix this without training by changing
only the last block: self-correlation attention (q-q, k-k, or k-k plus a spatial Gaussian),
and no residual or FFN. The default is ClearCLIP's recipe (q-q attention, no residual, no FFN;
sliding 224 windows at stride 112, i.e. half a window); subtracting a fraction of the global
image embedding ([CLS] bias) is opt-in (``cls_bias``, default 0: not measured with pretrained
weights here). Images larger than the model input are
processed in sliding windows whose token grids are averaged where they overlap ("slide"), or in
one pass with a resampled positional grid ("whole": fewer tokens, cheaper on a CPU).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, WeightsError
from ..config import resolve_device
from ..store import load_checkpoint
from .base import ImageTextEncoder, l2_normalize, register_encoder

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_configs_added = False


def _open_clip():
    """open_clip with our extra model configs (the tiny test model) registered once."""
    global _configs_added
    import open_clip
    if not _configs_added:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_added = True
    return open_clip


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick probe so an offline machine fails in seconds, not after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Temporarily put huggingface_hub into offline mode (cache only, no retries)."""
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip then uses plain URLs
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _expected_weight_file(open_clip, model: str, tag: str) -> str:
    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        return f"huggingface.co/{repo}/{fname or 'open_clip_pytorch_model.bin'} (hub cache: ~/.cache/huggingface/hub)"
    if cfg.get("url"):
        return f"{cfg['url']} (cache: ~/.cache/clip/{os.path.basename(cfg['url'])})"
    return "a checkpoint file"


def _weights_error(model: str, weights: str, expected: str, why: str) -> WeightsError:
    return WeightsError(
        f"CLIP weights for model {model!r} (pretrained {weights!r}) are not available: {why}. "
        f"Needed: {expected}. Download it on a machine with internet (or copy the hub cache) and pass "
        f"--clip-model {model} --clip-weights /path/to/checkpoint.pt (a file holding that model's state dict)")


ATTENTION_MODES = ("qq", "kk", "csa", "naclip", "qk")


@register_encoder("clip")
class ClipEncoder(ImageTextEncoder):
    """Any open_clip model + pretrained tag or local checkpoint file.

    spec: ``clip:<model>:<tag or file>``. ``attention`` picks the last-block variant for dense
    features: "qq" (ClearCLIP), "csa" (SCLIP: q-q + k-k), "kk", "naclip" (k-k + Gaussian
    neighbourhood), or "qk" (unmodified attention, still without residual/FFN).
    """

    def __init__(self, model: str = "ViT-B-16", weights: str | None = "openai", *, device: str = "auto",
                 precision: str = "auto", attention: str = "qq", cls_bias: float = 0.0,
                 short_side: int | None = None, window_stride: float = 0.5, batch_size: int = 16,
                 naclip_sigma: float = 5.0, windows: str = "slide"):
        import torch
        open_clip = _open_clip()
        self.model_name, self.weights = model, (weights or "")
        self.name = f"clip:{model}"
        self.device = resolve_device(device)
        if precision == "auto":
            precision = "fp16" if self.device.startswith("cuda") else "fp32"
        if attention not in ATTENTION_MODES:
            raise InputError(None, f"unknown dense attention {attention!r}; choose one of {', '.join(ATTENTION_MODES)}")
        self.precision, self.attention, self.cls_bias = precision, attention, float(cls_bias)
        self.window_stride, self.batch_size = float(window_stride), int(batch_size)
        self.naclip_sigma = float(naclip_sigma)
        if windows not in ("slide", "whole"):
            raise InputError(None, f"windows must be 'slide' or 'whole', got {windows!r}")
        self.windows = windows
        if model not in open_clip.list_models() and not model.startswith(("hf-hub:", "local-dir:")):
            raise InputError(None, f"unknown open_clip model {model!r} (see open_clip.list_models(); e.g. ViT-B-16)")
        self.model = self._load(open_clip, model, self.weights, precision)
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model)
        pcfg = open_clip.get_model_preprocess_cfg(self.model)
        self.mean = torch.tensor(pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(pcfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32).view(1, 3, 1, 1)
        v = self.model.visual
        self.input_hw = tuple(int(s) for s in (v.image_size if isinstance(v.image_size, (tuple, list)) else (v.image_size,) * 2))
        self.patch = tuple(int(p) for p in v.patch_size) if hasattr(v, "patch_size") else None
        self.dim = int(self.model.text_projection.shape[-1] if getattr(self.model, "text_projection", None) is not None
                       else self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])
        self.dtype = next(self.model.parameters()).dtype
        # default: ClearCLIP's resolution on a GPU (short side twice the model input: 448 for ViT-B/16);
        # on a CPU one row of windows at the model's own resolution (the measured CPU budget, docs/encoders.md)
        self.short_side = int(short_side) if short_side else \
            (2 if self.device.startswith("cuda") else 1) * min(self.input_hw)

    # -- loading -------------------------------------------------------------------------------
    def _load(self, open_clip, model: str, weights: str, precision: str):
        kw = dict(precision=precision, device=self.device)
        if not weights or weights == "none":  # random init: benchmarks and tests only
            return open_clip.create_model(model, pretrained=None, **kw)
        if model.startswith(("hf-hub:", "local-dir:")):  # config and weights come with the name
            offline = model.startswith("hf-hub:") and not hub_reachable()
            try:
                with _hub_offline(offline):
                    return open_clip.create_model(model, **kw)
            except Exception as exc:
                why = "offline and not in the local cache" if offline else str(exc).splitlines()[0][:200]
                raise _weights_error(model, weights, model, why) from None
        if os.path.isfile(weights):
            load_checkpoint(weights, what="CLIP checkpoint", mmap=True)  # refuse pickled code; tensors stay unread
            try:
                return open_clip.create_model(model, pretrained=weights, **kw)
            except Exception as exc:  # unreadable, or a state dict of another architecture
                msg = (str(exc).splitlines() or [""])[0][:300]
                raise InputError(weights, f"not a checkpoint of open_clip model {model!r}: "
                                          f"{type(exc).__name__}: {msg}") from None
        if _looks_like_path(weights):
            raise _weights_error(model, weights, weights, "no such file")
        if not open_clip.get_pretrained_cfg(model, weights):
            tags = open_clip.list_pretrained_tags_by_model(model)
            raise InputError(None, f"{weights!r} is neither a file nor a pretrained tag of {model!r} "
                                   f"(known tags: {', '.join(tags) or 'none'})")
        offline = not hub_reachable()
        try:
            with _hub_offline(offline):
                return open_clip.create_model(model, pretrained=weights, **kw)
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            why = "offline and not in the local cache" if offline else f"download failed ({str(exc)[:200]})"
            raise _weights_error(model, weights, _expected_weight_file(open_clip, model, weights), why) from None

    @classmethod
    def from_spec(cls, rest: str, **kw) -> "ClipEncoder":
        """``<model>:<weights>``, where an ``hf-hub:``/``local-dir:`` model name holds a colon itself."""
        prefix = next((p for p in ("hf-hub:", "local-dir:") if rest.startswith(p)), "")
        model, sep, weights = rest[len(prefix):].partition(":")
        return cls(prefix + model if (prefix or model) else "ViT-B-16", weights if sep else "openai", **kw)

    @property
    def spec(self) -> str:
        w = os.path.abspath(self.weights) if os.path.isfile(self.weights) else self.weights
        return f"clip:{self.model_name}:{w}"

    @property
    def dense_settings(self) -> dict:
        """What, besides the spec, changes dense features (part of per-view cache keys)."""
        return {"attention": self.attention, "cls_bias": self.cls_bias, "short_side": self.short_side,
                "window_stride": self.window_stride, "naclip_sigma": self.naclip_sigma,
                "windows": self.windows}

    # -- text and crops --------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 256):
                tok = self.tokenizer(list(texts[i:i + 256])).to(self.device)
                out.append(self.model.encode_text(tok).float().cpu().numpy())
        return l2_normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))

    def _to_tensor(self, images: np.ndarray, size: tuple[int, int] | None = None):
        """(B, H, W, 3) uint8 -> normalised (B, 3, H, W) (resized to ``size`` first) on device."""
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x / 255.0 - self.mean.to(self.device)) / self.std.to(self.device)
        return x.to(self.dtype)

    def encode_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Each crop is resized (longest side) and padded with the mean colour to the model input."""
        import torch
        import torch.nn.functional as F
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        H, W = self.input_hw
        mean_rgb = (self.mean.view(3) * 255).round().to(torch.uint8)
        batch = torch.empty((len(crops), H, W, 3), dtype=torch.uint8)
        for i, c in enumerate(crops):
            c = torch.from_numpy(np.ascontiguousarray(c[..., :3]))
            s = min(H / max(c.shape[0], 1), W / max(c.shape[1], 1))
            h, w = max(1, round(c.shape[0] * s)), max(1, round(c.shape[1] * s))
            r = F.interpolate(c.permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear", align_corners=False,
                              antialias=True)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
            batch[i] = mean_rgb
            y0, x0 = (H - h) // 2, (W - w) // 2
            batch[i, y0:y0 + h, x0:x0 + w] = r
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                out.append(self.model.encode_image(self._to_tensor(batch[i:i + self.batch_size].numpy())).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    # -- dense -------------------------------------------------------------------------------
    def _check_dense_supported(self):
        v = self.model.visual
        blk = getattr(getattr(v, "transformer", None), "resblocks", [None])[-1]
        import torch.nn as nn
        if blk is None or not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention) or \
                getattr(v, "attn_pool", None) is not None or self.patch is None:
            raise InputError(None, f"dense features need a plain ViT CLIP tower (open_clip VisionTransformer "
                                   f"with standard attention); {self.model_name} is not one")

    def _last_block_inputs(self, x):
        """Tokens entering the last block: (B, 1 + gh*gw, C)."""
        v = self.model.visual
        x = v._embeds(x) if tuple(x.shape[2:]) == self.input_hw else self._embeds_resized(x)
        for blk in v.transformer.resblocks[:-1]:
            x = blk(x)
        return x

    def _embeds_resized(self, x):
        """Patch + position embedding for an input of another size: the positional grid is
        resampled bicubically (as MaskCLIP does for whole-image inference)."""
        import torch
        import torch.nn.functional as F
        v = self.model.visual
        t = v.conv1(x)
        gh, gw = t.shape[2:]
        t = t.flatten(2).transpose(1, 2)
        pos = v.positional_embedding
        g0h, g0w = v.grid_size
        grid = pos[1:].reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1].float(), grid[0].permute(1, 2, 0).reshape(gh * gw, -1)]).to(t.dtype)
        cls = v.class_embedding.to(t.dtype).expand(t.shape[0], 1, -1)
        return v.ln_pre(v.patch_dropout(torch.cat([cls, t], 1) + pos))

    def _self_attention_tokens(self, x, grid: tuple[int, int]):
        """The modified last block: (B, L, C) tokens -> (B, L, C) without residual and FFN."""
        import torch
        import torch.nn.functional as F
        blk = self.model.visual.transformer.resblocks[-1]
        mha = blk.attn
        B, L, C = x.shape
        nh = mha.num_heads
        hd = C // nh
        y = blk.ln_1(x)
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, L, nh, hd).transpose(1, 2) for t in (q, k, v))
        scale = hd ** -0.5
        mode = self.attention
        if mode == "qq":
            attn = torch.softmax((q @ q.transpose(-1, -2)) * scale, -1)
        elif mode == "kk":
            attn = torch.softmax((k @ k.transpose(-1, -2)) * scale, -1)
        elif mode == "qk":
            attn = torch.softmax((q @ k.transpose(-1, -2)) * scale, -1)
        elif mode == "csa":
            attn = 0.5 * (torch.softmax((q @ q.transpose(-1, -2)) * scale, -1)
                          + torch.softmax((k @ k.transpose(-1, -2)) * scale, -1))
        else:  # naclip: k-k similarity plus a Gaussian prior on patch distance
            attn = torch.softmax((k @ k.transpose(-1, -2)) * scale + self._gaussian_bias(grid, x), -1)
        o = (attn.to(v.dtype) @ v).transpose(1, 2).reshape(B, L, C)
        return blk.ls_1(F.linear(o, mha.out_proj.weight, mha.out_proj.bias))

    def _gaussian_bias(self, grid, x):
        import torch
        gh, gw = grid
        yy, xx = torch.meshgrid(torch.arange(gh, device=x.device), torch.arange(gw, device=x.device), indexing="ij")
        p = torch.stack([yy.flatten(), xx.flatten()], 1).float()
        d2 = torch.cdist(p, p) ** 2
        g = -d2 / (2 * self.naclip_sigma ** 2)
        bias = torch.zeros((1 + gh * gw,) * 2, device=x.device)
        bias[1:, 1:] = g
        return bias.to(x.dtype)

    def _project(self, t):
        v = self.model.visual
        t = v.ln_post(t)
        return t @ v.proj if v.proj is not None else t

    def _window_features(self, x):
        """(B, 3, h, w) windows at the model input size -> (B, gh, gw, D) dense, (B, D) global."""
        import torch
        v = self.model.visual
        B = x.shape[0]
        gh, gw = x.shape[2] // self.patch[0], x.shape[3] // self.patch[1]
        tokens = self._last_block_inputs(x)
        dense = self._project(self._self_attention_tokens(tokens, (gh, gw))[:, 1:])
        dense = torch.nn.functional.normalize(dense.float(), dim=-1)
        if self.cls_bias:
            # the standard last block for the [CLS] query only: the image embedding
            blk = v.transformer.resblocks[-1]
            y = blk.ln_1(tokens)
            cls = tokens[:, :1] + blk.ls_1(blk.attn(y[:, :1], y, y, need_weights=False)[0])
            cls = cls + blk.ls_2(blk.mlp(blk.ln_2(cls)))
            g = torch.nn.functional.normalize(self._project(cls[:, 0]).float(), dim=-1)
            dense = torch.nn.functional.normalize(dense - self.cls_bias * g[:, None], dim=-1)
        return dense.reshape(B, gh, gw, -1)

    def window_layout(self, H: int, W: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Resized image size (multiple of the patch, >= model input) and window origins."""
        wh, ww = self.input_hw
        ph, pw = self.patch
        s = self.short_side / min(H, W)
        rh = max(wh, int(round(H * s / ph)) * ph)
        rw = max(ww, int(round(W * s / pw)) * pw)

        if self.windows == "whole":
            return (rh, rw), [(0, 0)]

        def starts(n, win, p):
            if n <= win:
                return [0]
            stride = max(p, int(win * self.window_stride) // p * p)
            k = math.ceil((n - win) / stride)
            return sorted({min(i * stride, n - win) for i in range(k + 1)})
        return (rh, rw), [(y, x) for y in starts(rh, wh, ph) for x in starts(rw, ww, pw)]

    def dense_features(self, image: np.ndarray) -> np.ndarray:
        import torch
        self._check_dense_supported()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape}")
        H, W = image.shape[:2]
        (rh, rw), origins = self.window_layout(H, W)
        wh, ww = self.input_hw if self.windows == "slide" else (rh, rw)
        ph, pw = self.patch
        with torch.inference_mode():
            x = self._to_tensor(image[None, ..., :3], (rh, rw))
            acc = torch.zeros((rh // ph, rw // pw, self.dim), dtype=torch.float32, device=self.device)
            cnt = torch.zeros((rh // ph, rw // pw, 1), dtype=torch.float32, device=self.device)
            for i in range(0, len(origins), self.batch_size):
                org = origins[i:i + self.batch_size]
                win = torch.stack([x[0, :, y:y + wh, xx:xx + ww] for y, xx in org])
                feats = self._window_features(win)
                for (y, xx), f in zip(org, feats):
                    acc[y // ph:y // ph + f.shape[0], xx // pw:xx // pw + f.shape[1]] += f
                    cnt[y // ph:y // ph + f.shape[0], xx // pw:xx // pw + f.shape[1]] += 1
            out = torch.nn.functional.normalize(acc / cnt.clamp_min(1), dim=-1)
        return out.cpu().numpy().astype(np.float32)
