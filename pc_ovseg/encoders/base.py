"""The image-text encoder interface and its registry.

Every encoder maps text and images into one embedding space, so fusion, query and eval never
need to know which model produced a feature. Encoders are named by spec strings
("clip:ViT-B-16:openai", "labels:wall,floor") that are stored with results and recreate the
encoder later; ``get_encoder`` resolves them through a registry of spec prefixes.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..labels import norm_name
from ..registry import Registry

_REGISTRY = Registry(attr="kind")


def register_encoder(name: str):
    """Class decorator: ``name`` becomes the spec prefix; the class gets ``from_spec(rest, **kw)``."""
    return _REGISTRY.register(name)


def registered_encoders() -> list[str]:
    return _REGISTRY.names()


_LOADED: "OrderedDict[tuple, ImageTextEncoder]" = OrderedDict()
_KEEP_LOADED = 2


def get_encoder(spec: str, *, reuse: bool = True, **kw) -> "ImageTextEncoder":
    """Resolve a spec string ("kind:args") to an encoder; keyword args go to the constructor.

    The last two encoders stay loaded (``reuse``): pipeline stages that re-resolve the spec
    stored in a result (run, then query) do not reload a CLIP model each time.
    """
    if isinstance(spec, ImageTextEncoder):
        return spec
    kind, _, rest = str(spec).partition(":")
    if kind not in _REGISTRY:
        raise InputError(None, f"unknown encoder {spec!r}: the prefix must be one of "
                               f"{', '.join(registered_encoders())} (e.g. clip:ViT-B-16:openai)")
    key = (str(spec), tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if reuse and key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    enc = _REGISTRY[kind].from_spec(rest, **kw)
    if reuse:
        _LOADED[key] = enc
        while len(_LOADED) > _KEEP_LOADED:
            _LOADED.popitem(last=False)
    return enc


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit rows; zero rows stay zero (they mean 'no feature')."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.where(n > 1e-12, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


class ImageTextEncoder:
    """Text and images into one L2-normalised embedding space of ``dim`` dimensions."""

    kind: str = ""
    name: str = ""
    dim: int = 0
    #: whether prompt templates ("a photo of a {}.") make sense for this encoder's text side
    uses_templates: bool = True

    @classmethod
    def from_spec(cls, rest: str, **kw) -> "ImageTextEncoder":
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The string that ``get_encoder`` turns back into this encoder."""
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(T, D) float32, L2-normalised."""
        raise NotImplementedError

    def encode_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Whole-image embeddings of (H, W, 3) uint8 crops -> (B, D) float32, L2-normalised."""
        raise NotImplementedError

    def dense_features(self, image: np.ndarray) -> np.ndarray:
        """(h, w, D) float32 low-resolution grid spanning the whole (H, W, 3) uint8 image."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


@register_encoder("labels")
class LabelEncoder(ImageTextEncoder):
    """The label space: one dimension per class; a class name is its own one-hot embedding.

    Used for per-view label maps from any 2D segmenter and for the oracle benchmark (fusing
    ground-truth labels), so the same fusion/query code runs on labels and on CLIP features.
    """

    uses_templates = False

    def __init__(self, class_names: Sequence[str], **_):  # device etc. do not apply
        names = [str(c).strip() for c in class_names]
        if not names or any(not c for c in names):
            raise InputError(None, f"labels encoder needs a non-empty comma-separated class list, got {class_names!r}")
        self.class_names = names
        self.name = "labels"
        self.dim = len(names)
        self._index: dict[str, int] = {}
        for i, c in enumerate(names):
            self._index.setdefault(norm_name(c), i)

    @classmethod
    def from_spec(cls, rest: str, **kw) -> "LabelEncoder":
        return cls([c for c in rest.split(",")], **kw)

    @property
    def spec(self) -> str:
        return "labels:" + ",".join(self.class_names)

    def index_of(self, name: str) -> int:
        """Class index of a name (matched by pc_ovseg.labels.norm_name), -1 if unknown."""
        return self._index.get(norm_name(name), -1)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, t in enumerate(texts):
            i = self.index_of(t)
            if i >= 0:
                out[r, i] = 1.0
        return out

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        """Integer labels (any shape) -> one-hot float32 rows; out-of-range/negative -> zeros."""
        labels = np.asarray(labels).astype(np.int64, copy=False)
        out = np.zeros(labels.shape + (self.dim,), np.float32)
        ok = (labels >= 0) & (labels < self.dim)
        out[ok, labels[ok]] = 1.0
        return out

    def encode_crops(self, crops):
        raise NotImplementedError("the labels encoder has no image side; use label maps (pc_ovseg.encoders.PrecomputedLabels)")

    def dense_features(self, image):
        raise NotImplementedError("the labels encoder has no image side; use label maps (pc_ovseg.encoders.PrecomputedLabels)")
