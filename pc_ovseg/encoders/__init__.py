"""2D open-vocabulary features: image-text encoders, masks, per-view features.

    encoder = get_encoder("clip:ViT-B-16:openai")          # or "labels:wall,floor,chair"
    text = encode_text_with_templates(encoder, ["chair", "table"])
    feats = ViewEncoder(encoder, masks="superpixels", cache_dir="cache/").encode(view)
    feats.sample(view.pixels)                               # (M, D) at the visible points
"""
from __future__ import annotations

import argparse

from .base import ImageTextEncoder, LabelEncoder, get_encoder, l2_normalize, register_encoder, registered_encoders
from .clip import ClipEncoder, resolve_device
from .masks import MaskSource, get_mask_source, mask_sources, paint_masks, prompt_points, register_masks
from .precomputed import PrecomputedFeatures, PrecomputedLabels, label_map_features
from .superpixels import slic
from .templates import encode_text_with_templates, load_templates
from .testing import TINY_TEST_MODEL, make_tiny_clip_checkpoint, make_tiny_sam_checkpoint
from .view_encoder import ViewEncoder, load_view_features, pool_regions, save_view_features

__all__ = [
    "ImageTextEncoder", "LabelEncoder", "ClipEncoder", "get_encoder", "register_encoder", "registered_encoders",
    "l2_normalize", "encode_text_with_templates", "load_templates",
    "MaskSource", "get_mask_source", "mask_sources", "register_masks", "paint_masks", "prompt_points", "slic",
    "ViewEncoder", "pool_regions", "save_view_features", "load_view_features",
    "PrecomputedFeatures", "PrecomputedLabels", "label_map_features",
    "TINY_TEST_MODEL", "make_tiny_clip_checkpoint", "make_tiny_sam_checkpoint",
    "add_encoder_args", "encoder_from_args", "view_encoder_from_args", "resolve_device",
]


def add_encoder_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of every command that runs 2D encoders."""
    g = parser.add_argument_group("2D encoders")
    g.add_argument("--clip-model", default="ViT-B-16", metavar="NAME",
                   help="open_clip model name (default ViT-B-16)")
    g.add_argument("--clip-weights", default="openai", metavar="TAG_OR_FILE",
                   help="open_clip pretrained tag (from the hub cache) or a checkpoint file with that model's "
                        "state dict (default openai)")
    g.add_argument("--sam-checkpoint", default=None, metavar="FILE", help="Segment Anything checkpoint (.pth)")
    g.add_argument("--sam-model", default="auto", choices=["auto", "vit_b", "vit_l", "vit_h", "tiny"],
                   help="SAM architecture (default: inferred from the checkpoint)")
    g.add_argument("--masks", default="auto", choices=["auto", "sam", "sam3d", "superpixels", "none"],
                   help="mask source; auto = sam with a SAM checkpoint on a GPU, else superpixels")
    g.add_argument("--mask-features", default="pool", choices=["pool", "crops"],
                   help="region feature: mean of dense features in the mask, or multi-scale crop embeddings")
    g.add_argument("--blend", type=float, default=0.5, help="weight of the region feature vs the dense feature")
    g.add_argument("--sam-points-per-side", type=int, default=32, help="grid density of SAM automatic masks")
    g.add_argument("--dense-attention", default="qq", choices=["qq", "csa", "kk", "naclip", "qk"],
                   help="last-block attention for dense CLIP features (qq = ClearCLIP)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    return parser


def encoder_from_args(args: argparse.Namespace) -> ImageTextEncoder:
    return ClipEncoder(args.clip_model, args.clip_weights, device=getattr(args, "device", "auto"),
                       attention=getattr(args, "dense_attention", "qq"))


def resolve_masks(args: argparse.Namespace) -> str:
    m = getattr(args, "masks", "auto") or "auto"
    if m == "auto":
        dev = resolve_device(getattr(args, "device", "auto"))
        m = "sam" if (getattr(args, "sam_checkpoint", None) and dev.startswith("cuda")) else "superpixels"
    return m


def view_encoder_from_args(args: argparse.Namespace, cache_dir=None, encoder: ImageTextEncoder | None = None) -> ViewEncoder:
    masks = resolve_masks(args)
    mask_kw = {}
    if masks in ("sam", "sam3d"):
        mask_kw = {"checkpoint": args.sam_checkpoint, "model": getattr(args, "sam_model", "auto"),
                   "device": getattr(args, "device", "auto")}
        if masks == "sam":
            mask_kw["points_per_side"] = getattr(args, "sam_points_per_side", 32)
    return ViewEncoder(encoder or encoder_from_args(args), masks=masks, mask_kw=mask_kw,
                       mask_features=getattr(args, "mask_features", "pool"), blend=getattr(args, "blend", 0.5),
                       cache_dir=cache_dir)
