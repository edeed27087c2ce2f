"""2D open-vocabulary features: image-text encoders, masks, per-view features.

    encoder = get_encoder("clip:ViT-B-16:openai")          # or "labels:wall,floor,chair"
    text = encode_text_with_templates(encoder, ["chair", "table"])
    feats = ViewEncoder(encoder, masks="superpixels", cache_dir="cache/").encode(view)
    feats.sample(view.pixels)                               # (M, D) at the visible points
"""
from __future__ import annotations

from .base import ImageTextEncoder, LabelEncoder, get_encoder, l2_normalize, register_encoder, registered_encoders
from .clip import ClipEncoder, resolve_device
from .masks import MaskSource, get_mask_source, mask_sources, paint_masks, prompt_points, register_masks
from . import sam2_masks  # registers the sam2 / sam2_3d mask sources (the sam2 package is imported on use)
from .precomputed import PrecomputedFeatures, PrecomputedLabels, label_map_features
from .superpixels import slic
from .templates import encode_text_with_templates, load_templates
from .testing import TINY_TEST_MODEL, make_tiny_clip_checkpoint, make_tiny_sam_checkpoint
from .view_encoder import ViewEncoder, load_view_features, pool_regions, save_view_features, view_features_dim

__all__ = [
    "ImageTextEncoder", "LabelEncoder", "ClipEncoder", "get_encoder", "register_encoder", "registered_encoders",
    "l2_normalize", "encode_text_with_templates", "load_templates",
    "MaskSource", "get_mask_source", "mask_sources", "register_masks", "paint_masks", "prompt_points", "slic",
    "ViewEncoder", "pool_regions", "save_view_features", "load_view_features", "view_features_dim",
    "PrecomputedFeatures", "PrecomputedLabels", "label_map_features",
    "TINY_TEST_MODEL", "make_tiny_clip_checkpoint", "make_tiny_sam_checkpoint",
    "resolve_device",
]
