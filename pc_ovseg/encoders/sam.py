"""Loading Segment Anything checkpoints of any size.

``segment_anything.sam_model_registry`` knows only vit_b/l/h; we build ``Sam`` from an
architecture description instead, inferred from the checkpoint's tensor shapes when the model
is "auto". That loads the official checkpoints and also small ones (tests, distilled models)
through one code path.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial

from ..errors import InputError, WeightsError
from ..store import load_checkpoint

SAM_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


@dataclass(frozen=True)
class SamArch:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    use_rel_pos: bool = True
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM_ARCHS = {
    "vit_b": SamArch(),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    # a few-MB model of the same architecture, for tests (pc_ovseg.encoders.testing)
    "tiny": SamArch(64, 2, 2, (1,), img_size=256, window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64,
                    iou_head_hidden_dim=32, mask_in_chans=8),
}


def build_sam(arch: SamArch):
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    emb = arch.img_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=arch.use_rel_pos,
            global_attn_indexes=tuple(arch.global_attn_indexes), window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(arch.img_size, arch.img_size), mask_in_chans=arch.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=arch.prompt_embed_dim,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_heads),
            transformer_dim=arch.prompt_embed_dim, iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def infer_arch(sd: dict) -> SamArch:
    """Architecture from a SAM state dict's tensor shapes."""
    pe = sd["image_encoder.patch_embed.proj.weight"]
    embed, patch = int(pe.shape[0]), int(pe.shape[2])
    grid = int(sd["image_encoder.pos_embed"].shape[1])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)))
    use_rel = "image_encoder.blocks.0.attn.rel_pos_h" in sd
    heads, glob, window = max(1, embed // 64), [], 14
    if use_rel:
        head_dim = int(sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
        heads = embed // head_dim
        for i in range(depth):
            size = (int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2
            if size == grid:
                glob.append(i)
            else:
                window = size
    prompt = int(sd["image_encoder.neck.0.weight"].shape[0])
    return SamArch(
        embed_dim=embed, depth=depth, num_heads=heads, global_attn_indexes=tuple(glob),
        img_size=grid * patch, patch_size=patch, window_size=window, use_rel_pos=use_rel,
        prompt_embed_dim=prompt,
        decoder_mlp_dim=int(sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        iou_head_hidden_dim=int(sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
        mask_in_chans=int(sd["prompt_encoder.mask_downscaling.3.weight"].shape[0]))


def load_sam(checkpoint: str | None, model: str = "auto", device: str = "cpu"):
    """A ``Sam`` in eval mode on ``device``; ``model`` is vit_b/vit_l/vit_h/tiny or auto (infer)."""
    if not checkpoint:
        raise WeightsError(
            "SAM masks need a checkpoint and none can be downloaded here: pass --sam-checkpoint FILE "
            f"(e.g. sam_vit_b_01ec64.pth from {SAM_URLS['vit_b']}), or use --masks superpixels")
    if not os.path.isfile(checkpoint):
        raise WeightsError(f"SAM checkpoint {checkpoint} not found: pass --sam-checkpoint with an existing file "
                           f"(official files: {', '.join(SAM_URLS.values())})")
    if model not in ("auto", *SAM_ARCHS):
        raise InputError(None, f"unknown SAM model {model!r}; choose auto, {', '.join(SAM_ARCHS)}")
    sd = load_checkpoint(checkpoint, what="SAM checkpoint")
    if isinstance(sd, dict):
        for key in ("model", "state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
    try:
        arch = infer_arch(sd) if model == "auto" else SAM_ARCHS[model]
        sam = build_sam(arch)
        sam.load_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputError(checkpoint, f"not a SAM {model} checkpoint ({str(exc).splitlines()[0][:200]})") from None
    return sam.to(device)
