"""How a run is made: one typed config per stage, composed in :class:`RunConfig`.

Each option is written once, as a dataclass field with its default, its help and its range
(:func:`option`); the CLI builds its flags from these fields, config files (``--config run.yaml``)
fill the same fields, and the library takes the dataclasses. Values are checked when a config
is built, so a bad option fails before any work, in one line naming it. The hash of the parts
that change a result is the cache key of every entry point (:meth:`RunConfig.cache_parts`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from .errors import InputError
from .fusion import FusionConfig

# -- checked options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A number in [lo, hi] (int or finite float); ``none`` allows None (meaning "automatic")."""

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    none: bool = False
    open_lo: bool = False       # lo itself excluded (e.g. a size must be > 0)

    def parse(self, text: str):
        if self.none and text.lower() in ("none", "auto"):
            return None
        try:
            return self.kind(text) if self.kind is float else int(text, 10)
        except ValueError:
            raise ValueError(f"expected {'an integer' if self.kind is int else 'a number'}, got {text!r}") from None

    def problem(self, v) -> str | None:
        if v is None:
            return None if self.none else "must be set"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.kind is int and not float(v).is_integer()):
            return f"expected {'an integer' if self.kind is int else 'a number'}, got {v!r}"
        if not math.isfinite(v):
            return f"must be a finite number, got {v}"
        if self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo):
            return f"must be {'>' if self.open_lo else '>='} {self.lo:g}, got {v:g}"
        if self.hi is not None and v > self.hi:
            return f"must be <= {self.hi:g}, got {v:g}"
        return None


@dataclass(frozen=True)
class IntOr:
    """One of ``words``, or an integer >= ``lo`` (e.g. frames: "selected" | "all" | N)."""

    words: tuple = ()
    lo: int = 1

    def _expected(self) -> str:
        return f"expected {', '.join(self.words)} or an integer >= {self.lo}"

    def parse(self, text: str):
        if text.strip().lower() in self.words:
            return text.strip().lower()
        try:
            return int(text, 10)
        except ValueError:
            raise ValueError(f"{self._expected()}, got {text!r}") from None

    def problem(self, v) -> str | None:
        if isinstance(v, str) and v in self.words:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < self.lo:
            return f"{self._expected()}, got {v!r}"
        return None


def option(default, help: str, *, check: Num | IntOr | None = None, choices: tuple | None = None,
           metavar: str | None = None, flag: str | None = None):
    """A config field with what its command-line flag needs; ``flag=""`` keeps it off the CLI."""
    meta = {"help": help, "check": check, "choices": choices, "metavar": metavar, "flag": flag}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def validate(cfg, section: str = "") -> None:
    """Every field's range and choices; raises InputError naming the option."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        check, choices = f.metadata.get("check"), f.metadata.get("choices")
        why = check.problem(v) if check else None
        if why is None and choices and v not in choices:
            why = f"must be one of {', '.join(map(str, choices))}, got {v!r}"
        if why:
            raise InputError(None, f"{flag_name(f)} ({section + '.' if section else ''}{f.name}) {why}")


def flag_name(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


class _Checked:
    def __post_init__(self):
        validate(self, type(self).__name__.removesuffix("Config").lower())


# -- the stages ----------------------------------------------------------------------------------
KINDS = ("auto", "indoor", "aerial", "street", "object")


@dataclass
class ViewsConfig(_Checked):
    """From an input to its views: frames selected, or cameras planned and rendered."""

    max_views: int | None = option(None, "view budget (selected frames or planned views; default: the plan's own)",
                                   check=Num(int, 1, 100_000, none=True))
    kind: str = option("auto", "camera plan for bare clouds and meshes (default: detected from the scene)",
                       choices=KINDS)
    min_views: int | None = option(None, "views the camera plan aims for per point (default 8; 1 = coverage only)",
                                   check=Num(int, 1, 1000, none=True))
    zoom: int = option(2, "organised clouds (one frame): also use 3x3 overlapping crops enlarged this much (1 = off)",
                       check=Num(int, 1, 8))
    width: int = option(640, "rendered view width (px)", check=Num(int, 16, 8192))
    height: int = option(480, "rendered view height (px)", check=Num(int, 16, 8192))
    voxel_size: float = option(0.02, "for RGB-D input: voxel size (m) of the cloud built from depth",
                               check=Num(float, 0, 100, open_lo=True))
    cloud: str | None = option(None, "for RGB-D input: label this cloud instead of one built from depth",
                               metavar="FILE")
    cloud_frames: str | int = option("selected", "for RGB-D input: build the cloud from the frames the views use "
                                     "(selected), all frames, or N evenly chosen ones",
                                     check=IntOr(("selected", "all")), metavar="selected|all|N")
    layout: str | None = option(None, "column layout of raw .bin/.npy input, e.g. xyzrgb")

    def cache_parts(self) -> dict:
        """What changes the views, besides the input's content (which the cache key hashes itself)."""
        return {k: v for k, v in asdict(self).items() if k not in ("cloud", "layout")}


MASKS = ("auto", "sam", "sam3d", "sam2", "sam2_3d", "superpixels", "none")
# SAM 2 sizes whose prompted view (sam2_3d, 256 prompts) fits a CPU: measured on 2 cores, docs/encoders.md
SAM2_CPU_SIZES = ("tiny", "small")


@dataclass
class EncoderConfig(_Checked):
    """The 2D stage: CLIP (dense and region features) and the mask source."""

    clip_model: str = option("ViT-B-16", "open_clip model name (or hf-hub:ORG/NAME, local-dir:PATH)", metavar="NAME")
    clip_weights: str = option("openai", "open_clip pretrained tag (from the hub cache), a checkpoint file with that "
                               "model's state dict, or 'none' (random weights: tests and timing only)",
                               metavar="TAG_OR_FILE")
    sam_checkpoint: str | None = option(None, "Segment Anything checkpoint (.pth)", metavar="FILE")
    sam_model: str = option("auto", "SAM architecture (default: inferred from the checkpoint)",
                            choices=("auto", "vit_b", "vit_l", "vit_h", "tiny"))
    sam2_checkpoint: str | None = option(None, "SAM 2 / SAM 2.1 checkpoint (.pt, any size, e.g. "
                                         "sam2.1_hiera_tiny.pt)", metavar="FILE")
    sam2_model: str = option("auto", "SAM 2 size (default: inferred from the checkpoint)",
                             choices=("auto", "tiny", "small", "base_plus", "large"))
    sam2_image_size: int = option(1024, "SAM 2 input side (px, multiple of 32): 1024 as trained; 512 is ~4x "
                                  "cheaper and coarser (docs/encoders.md)", check=Num(int, 128, 2048), metavar="PX")
    masks: str = option("auto", "mask source; auto = sam2_3d (3D-prompted SAM 2) with --sam2-checkpoint on a GPU, "
                        "or on a CPU for the sizes whose measured cost fits (tiny, small: docs/encoders.md); "
                        "else sam with --sam-checkpoint on a GPU; else superpixels", choices=MASKS)
    mask_features: str = option("pool", "region feature: mean of dense features in the mask, or multi-scale crops",
                                choices=("pool", "crops"))
    blend: float = option(0.5, "weight of the region feature vs the dense feature", check=Num(float, 0, 1))
    sam_points_per_side: int = option(32, "grid density of SAM automatic masks", check=Num(int, 1, 256))
    dense_attention: str = option("qq", "last-block attention for dense CLIP features (qq = ClearCLIP)",
                                  choices=("qq", "csa", "kk", "naclip", "qk"))
    dense_windows: str = option("slide", "dense CLIP over model-size sliding windows, or the whole image at once",
                                choices=("slide", "whole"))
    dense_short_side: int | None = option(None, "image short side for dense CLIP (default: on a GPU twice the "
                                          "model input, 448 for ViT-B/16 as ClearCLIP; on a CPU the model input, "
                                          "224)", check=Num(int, 32, 4096, none=True), metavar="PX")
    dense_cls_bias: float = option(0.0, "subtract this fraction of the image embedding from every dense feature "
                                   "(opt-in: untuned, not measured with pretrained weights; 0 = ClearCLIP)",
                                   check=Num(float, 0, 1))
    clip_precision: str = option("auto", "auto = fp16 on CUDA, fp32 on CPU", choices=("auto", "fp32", "fp16", "bf16"))
    sam_pred_iou_thresh: float = option(0.88, "SAM predicted-IoU threshold", check=Num(float, 0, 1))
    sam_stability_thresh: float = option(0.95, "SAM stability-score threshold", check=Num(float, 0, 1))
    sam2_pred_iou_thresh: float = option(0.8, "SAM 2 predicted-IoU threshold (SAM 2's own default; its stability "
                                         "threshold is --sam-stability-thresh, 0.95 in both)", check=Num(float, 0, 1))
    device: str = option("auto", "cpu, cuda, cuda:1, or auto")

    def resolved_masks(self) -> str:
        if self.masks != "auto":
            return self.masks
        from .encoders import resolve_device
        gpu = resolve_device(self.device).startswith("cuda")
        if self.sam2_checkpoint and (gpu or self.sam2_size() in SAM2_CPU_SIZES):
            return "sam2_3d"
        return "sam" if self.sam_checkpoint and gpu else "superpixels"

    def sam2_size(self) -> str | None:
        """The SAM 2 checkpoint's size (given, or read from its shapes); None when unreadable."""
        if self.sam2_model != "auto":
            return self.sam2_model
        from .encoders.sam2_masks import checkpoint_size
        return checkpoint_size(self.sam2_checkpoint)

    def build_encoder(self):
        from .encoders import ClipEncoder
        return ClipEncoder(self.clip_model, self.clip_weights, device=self.device, precision=self.clip_precision,
                           attention=self.dense_attention, windows=self.dense_windows,
                           cls_bias=self.dense_cls_bias,
                           short_side=self.dense_short_side)

    def build(self, encoder=None):
        """The ViewEncoder these settings describe (``encoder``: an already loaded image-text model)."""
        from .encoders import ViewEncoder
        masks = self.resolved_masks()
        mask_kw = {}
        if masks in ("sam", "sam3d"):
            mask_kw = {"checkpoint": self.sam_checkpoint, "model": self.sam_model, "device": self.device,
                       "pred_iou_thresh": self.sam_pred_iou_thresh,
                       "stability_score_thresh": self.sam_stability_thresh}
            if masks == "sam":
                mask_kw["points_per_side"] = self.sam_points_per_side
        elif masks in ("sam2", "sam2_3d"):
            mask_kw = {"checkpoint": self.sam2_checkpoint, "model": self.sam2_model, "device": self.device,
                       "image_size": self.sam2_image_size, "pred_iou_thresh": self.sam2_pred_iou_thresh,
                       "stability_score_thresh": self.sam_stability_thresh}
            if masks == "sam2":
                mask_kw["points_per_side"] = self.sam_points_per_side
        return ViewEncoder(encoder or self.build_encoder(), masks=masks, mask_kw=mask_kw,
                           mask_features=self.mask_features, blend=self.blend)


@dataclass
class OutputConfig(_Checked):
    """What a run writes, and how it labels."""

    labels: str | None = option(None, "vocabulary: label-set name (scannet20, ...), file, or 'wall,floor,chair,other'")
    distilled: str | None = option(None, "also predict with this distilled 3D model (`pc-ovseg distill`) and label "
                                   "the 2D-3D ensemble", metavar="CKPT")
    tta: int = option(1, "test-time augmentations for --distilled", check=Num(int, 1, 64))
    compress: int | None = option(None, "store fused features as their K principal components (fitted on the "
                                        "fused features; text queries are projected into them), e.g. 64 for 512-d CLIP",
                                  check=Num(int, 1, 4096, none=True), metavar="K")
    formats: list = option(["ply", "las", "npz"], "label export formats", flag="")
    progress: bool = option(True, "progress bars on stderr", flag="")


@dataclass
class ScaleConfig(_Checked):
    """Past one process: clouds split into tiles, and units of work (tiles, scenes) run where."""

    tiles: str | int = option("auto", "auto = tile a cloud of more than --tile-points points; off; or N = tiles "
                                      "of at most N points", check=IntOr(("auto", "off"), lo=1000))
    tile_points: int = option(250_000, "points per tile core for --tiles auto (smaller tiles get finer views)",
                              check=Num(int, 1000, 10**9))
    tile_halo: float = option(4.0, "metres each tile reaches past its core, so views see across its seams",
                              check=Num(float, 0, 1000))
    executor: str = option("local", "where tiles and scenes run: here (one after another, or --workers "
                                    "processes) or on a Ray cluster", choices=("local", "ray"))
    workers: int | None = option(None, "worker processes / Ray actors (default: local 1, Ray: one per GPU or CPU)",
                                 check=Num(int, 1, 4096, none=True))
    address: str | None = option(None, "Ray cluster address (default: start a local cluster)", metavar="ADDR")
    retries: int = option(1, "times a failed tile or scene is retried before it is reported and skipped",
                          check=Num(int, 0, 10))

    def tile_budget(self, n_points: int) -> int | None:
        """Points per tile, or None when this cloud is run whole."""
        if self.tiles == "off":
            return None
        if self.tiles == "auto":
            return self.tile_points if n_points > self.tile_points else None
        return int(self.tiles)

    def executor_kw(self) -> dict:
        return {"workers": self.workers, **({"address": self.address} if self.executor == "ray" else {})}


@dataclass
class InstancesConfig(_Checked):
    """3D instances from the views' 2D masks (pc_ovseg.instances); measured by scripts/bench_instances.py."""

    enabled: bool = option(False, "also make 3D instances (instances.npz/.ply/.json)", flag="")
    feature: str = option("views", "instance feature: the members' fused features, or the 2D features of "
                                    "the views that see it best", choices=("points", "views"),
                          flag="--instance-feature")
    top_k: int = option(5, "views per instance for --instance-feature views", check=Num(int, 1, 100),
                        flag="--instance-views")
    min_points: int = option(50, "smallest instance kept (points)", check=Num(int, 1), flag="--instance-min-points")
    min_together: int = option(4, "views that must put two pieces in one mask before they merge",
                               check=Num(int, 1, 1000), flag="--instance-min-together")

    def proposal(self):
        from .instances import ProposalConfig
        return ProposalConfig(min_points=self.min_points, min_together=self.min_together)


@dataclass
class BenchConfig(_Checked):
    """What ``pc-ovseg bench`` runs over: which scenes of which dataset, scored how, run where."""

    split: str = option("val", "dataset split")
    scenes: str | None = option(None, "only these scenes, comma-separated (default: the whole split)", metavar="A,B")
    limit: int | None = option(None, "only the first N scenes of the split", check=Num(int, 1, none=True))
    frame_skip: int = option(1, "use every Nth dataset frame (ScanNet: every 20th is the usual benchmark)",
                             check=Num(int, 1, 10000))
    oracle: bool = option(False, "2D predictions made from the dataset's ground truth (no CLIP weights needed)",
                          flag="")
    noise: float = option(0.0, "--oracle: relabel this fraction of each view's regions with a wrong class",
                          check=Num(float, 0, 1))
    seed: int = option(0, "--oracle --noise: random seed", check=Num(int, 0))
    features: str | None = option(None, "precomputed:DIR = score per-scene fused features made elsewhere "
                                        "(DIR/<scene>.npz FeatureClouds, or OpenScene .pt files)", metavar="SPEC")
    features_encoder: str | None = option(None, "text side of --features (e.g. clip:ViT-L-14-336:openai for "
                                                "OpenScene's OpenSeg features; default: the --clip-model)",
                                          metavar="SPEC")

    def result_parts(self) -> dict:
        """What changes a scene's numbers (not where or how many workers run it)."""
        return {"frame_skip": self.frame_skip, "oracle": self.oracle, "noise": self.noise, "seed": self.seed,
                "features": self.features, "features_encoder": self.features_encoder}


@dataclass
class MappingConfig(_Checked):
    """``pc-ovseg map``: posed RGB-D frames (a folder, manifest or ROS bag) streamed into a voxel map."""

    voxel_size: float = option(0.05, "map voxel size (m)", check=Num(float, 0.001, 10))
    every: int = option(1, "use every Nth input frame", check=Num(int, 1, 100_000), metavar="N")
    keyframe_every: int = option(10, "run the 2D model on every Nth used frame (0 = only when the view moved "
                                     "or turned enough)", check=Num(int, 0, 100_000), metavar="N")
    keyframe_move: float = option(0.5, "also a keyframe once the camera moved this far (m) since the last one "
                                       "(0 = off)", check=Num(float, 0, 1000), metavar="M")
    keyframe_turn: float = option(30.0, "also a keyframe once the camera turned this far (degrees) since the last "
                                        "one (0 = off)", check=Num(float, 0, 360), metavar="DEG")
    max_voxels: int = option(2_000_000, "voxel budget: past it the least observed voxels are dropped (down to "
                                        "9 in 10 of it)", check=Num(int, 1000, 10**9), metavar="N")
    snapshot_every: int = option(100, "write the map every N used frames, so a crash loses at most that many "
                                      "(0 = only at the end)", check=Num(int, 0, 10**9), metavar="N")
    normals: bool = option(False, "weigh keyframe observations by viewing angle too, with normals from the "
                                  "keyframe's depth (batch runs on RGB-D have no normals, so off fuses as they do)",
                           flag="")
    fuse_lag: int = option(5, "a keyframe's features fuse this many frames after it (the voxels first seen "
                              "just after it get its vote too; queries see them that much later)",
                           check=Num(int, 0, 10_000), metavar="N")
    pending: int = option(2, "keyframes waiting for the 2D model at most; a live stream drops the oldest past "
                             "it, a recording waits", check=Num(int, 1, 1000), metavar="N")
    topics: str | None = option(None, "ROS bag: the topics to use, comma-separated (default: chosen by type: "
                                      "colour and depth images, camera info, pose or /tf)", metavar="T1,T2")
    sync: float = option(0.02, "ROS bag: colour, depth and pose stamps match within this many seconds",
                         check=Num(float, 0, 10), metavar="S")
    world_frame: str | None = option(None, "ROS bag with /tf: the map's frame (default: the root of the tf tree)",
                                     metavar="FRAME")
    camera_frame: str | None = option(None, "ROS bag with /tf: the camera's optical frame (default: the depth "
                                            "image's frame_id)", metavar="FRAME")


# -- composed ------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """A whole run; ``to_dict()`` is written into ``fused.npz`` and ``summary.json``."""

    views: ViewsConfig = field(default_factory=ViewsConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    instances: InstancesConfig = field(default_factory=InstancesConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str | None = None) -> "RunConfig":
        """The inverse of to_dict; unknown sections or keys are errors (a typo never passes silently)."""
        if not isinstance(d, dict):
            raise InputError(source, "a run configuration is a mapping of sections (views, encoder, fusion, output, scale, instances)")
        parts = {}
        for f in fields(cls):
            sub = d.get(f.name, {})
            parts[f.name] = _build(f.default_factory, sub, f.name, source)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(source, f"unknown section {sorted(unknown)[0]!r}; sections: views, encoder, fusion, output, scale, instances")
        return cls(**parts)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunConfig":
        """A YAML or JSON file holding (some of) ``to_dict()``."""
        from .errors import check_input_path
        p = check_input_path(path)
        text = open(p, encoding="utf-8", errors="replace").read()
        try:
            if p.endswith((".yaml", ".yml")):
                import yaml
                d = yaml.safe_load(text) or {}
            else:
                d = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
            raise InputError(p, f"not valid {'YAML' if p.endswith(('.yaml', '.yml')) else 'JSON'} "
                                f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})") from None
        return cls.from_dict(d, source=p)

    def dump(self) -> str:
        """YAML when PyYAML is present, else JSON (both read back by :meth:`load`)."""
        try:
            import yaml
            return yaml.safe_dump(self.to_dict(), sort_keys=False)
        except ImportError:
            return json.dumps(self.to_dict(), indent=2)

    def cache_parts(self, view_encoder=None) -> dict:
        """Everything that changes views, 2D features or fusion (not outputs, devices or progress):
        with the input's content digest, the cache key. The encoder part is what the built
        encoder reports (``view_encoder.settings``), so a hand-made encoder keys correctly too."""
        enc = getattr(view_encoder, "settings", None)
        if enc is None:
            enc = {k: v for k, v in asdict(self.encoder).items() if k != "device"}
        return {"views": self.views.cache_parts(), "encoder": enc, "fusion": asdict(self.fusion)}


def _build(factory, sub, section: str, source):
    proto = factory()
    if is_dataclass(sub):
        return sub
    if not isinstance(sub, dict):
        raise InputError(source, f"section {section!r} must be a mapping, got {type(sub).__name__}")
    names = {f.name for f in fields(proto)}
    unknown = sorted(set(sub) - names)
    if unknown:
        raise InputError(source, f"unknown option {section}.{unknown[0]} (known: {', '.join(sorted(names))})")
    try:
        obj = type(proto)(**sub)
    except TypeError as exc:
        raise InputError(source, f"section {section!r}: {exc}") from None
    except InputError as exc:
        raise InputError(source, exc.problem) from None
    if type(proto) is FusionConfig:  # fusion's knobs keep their plain dataclass; check types here
        for f in fields(obj):
            v, d = getattr(obj, f.name), getattr(proto, f.name)
            if type(v) is not type(d) and not (isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool)):
                raise InputError(source, f"fusion.{f.name} must be {type(d).__name__}, got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(source, f"fusion.{f.name} must be finite, got {v}")
    return obj


def default_of(f) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def resolve_device(device: str | None = "auto") -> str:
    """'auto'/None -> 'cuda' when present, else 'cpu'; anything else must name a device this
    machine has (one check for every command, before any work)."""
    import torch
    d = "auto" if device in (None, "") else str(device)
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        raise InputError(None, f"--device {d!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise InputError(None, f"--device {d!r}: no such CUDA device here (use cpu or auto)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(None, f"--device {d!r}: expected auto, cpu, cuda or cuda:N")
    return d
