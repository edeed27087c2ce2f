"""The one data model passed between pipeline stages.

io -> PointCloud / Mesh / FrameSequence; views -> View; encoders -> per-view features;
fusion -> FusedFeatures (pc_ovseg.fusion); query -> labels, heatmaps, objects.

Coordinates: ``PointCloud.xyz`` is float32 *relative to* a float64 ``origin`` so that
UTM-scale clouds keep millimetre precision. Cameras live in the same local frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np


def _as_f32(a, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape_tail))}), got {a.shape}")
    return a


@dataclass
class PointCloud:
    """Points with optional colour, normals and any per-point fields (labels, intensity, ...)."""

    xyz: np.ndarray                                   # (N, 3) float32, relative to origin
    rgb: np.ndarray | None = None                     # (N, 3) uint8
    normals: np.ndarray | None = None                 # (N, 3) float32
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) or (N, k)
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) float64
    grid_shape: tuple[int, int] | None = None          # (H, W) for organised clouds
    source: str | None = None                          # path it was read from

    def __post_init__(self):
        self.xyz = _as_f32(self.xyz, (3,), "xyz")
        n = len(self.xyz)
        if self.rgb is not None:
            self.rgb = np.ascontiguousarray(self.rgb)
            if self.rgb.shape != (n, 3):
                raise ValueError(f"rgb must have shape ({n}, 3), got {self.rgb.shape}")
            if self.rgb.dtype != np.uint8:
                self.rgb = _rgb_to_u8(self.rgb)
        if self.normals is not None:
            self.normals = _as_f32(self.normals, (3,), "normals")
            if len(self.normals) != n:
                raise ValueError(f"normals must have {n} rows, got {len(self.normals)}")
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        for k, v in self.fields.items():
            v = np.asarray(v)
            if len(v) != n:
                raise ValueError(f"field {k!r} has {len(v)} rows, expected {n}")
            self.fields[k] = v
        if self.grid_shape is not None and self.grid_shape[0] * self.grid_shape[1] != n:
            raise ValueError(f"grid_shape {self.grid_shape} does not match {n} points")

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def world_xyz(self) -> np.ndarray:
        """Absolute float64 coordinates."""
        return self.xyz.astype(np.float64) + self.origin

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) in world coordinates (float64)."""
        if len(self) == 0:
            return np.full(3, np.nan), np.full(3, np.nan)
        return self.xyz.min(0) + self.origin, self.xyz.max(0) + self.origin

    def select(self, idx) -> "PointCloud":
        """Subset by index or boolean mask; the organised grid is dropped."""
        idx = np.asarray(idx)
        return PointCloud(
            xyz=self.xyz[idx],
            rgb=None if self.rgb is None else self.rgb[idx],
            normals=None if self.normals is None else self.normals[idx],
            fields={k: v[idx] for k, v in self.fields.items()},
            origin=self.origin.copy(),
            source=self.source,
        )

    def with_fields(self, **fields: np.ndarray) -> "PointCloud":
        return replace(self, fields={**self.fields, **fields})

    def field_names(self) -> list[str]:
        names = ["x", "y", "z"]
        if self.rgb is not None:
            names += ["red", "green", "blue"]
        if self.normals is not None:
            names += ["nx", "ny", "nz"]
        return names + list(self.fields)


def _rgb_to_u8(rgb: np.ndarray) -> np.ndarray:
    if np.issubdtype(rgb.dtype, np.floating):
        scale = 255.0 if np.nanmax(rgb, initial=0) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(rgb) * scale + 0.5, 0, 255).astype(np.uint8)
    if rgb.dtype == np.uint16 or np.max(rgb, initial=0) > 255:
        return (rgb.astype(np.uint32) >> 8).astype(np.uint8)  # LAS 16-bit colour
    return rgb.astype(np.uint8)


@dataclass
class Mesh:
    """Triangle mesh; per-vertex colour and fields, float64 origin as for PointCloud.

    A textured mesh (photogrammetry GLB/OBJ) keeps its UVs and texture: the renderer samples
    the texture per pixel, so a 2D model sees the photo detail between vertices; ``vertex_rgb``
    holds the texture sampled at each vertex for everything that works on points.
    """

    vertices: np.ndarray                               # (V, 3) float32, relative to origin
    faces: np.ndarray                                  # (F, 3) int64
    vertex_rgb: np.ndarray | None = None               # (V, 3) uint8
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # per-vertex
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    source: str | None = None
    uv: np.ndarray | None = None                       # (V, 2) float32 texture coordinates (v up)
    texture: np.ndarray | None = None                  # (H, W, 3) uint8, row 0 = top (v = 1)

    def __post_init__(self):
        self.vertices = _as_f32(self.vertices, (3,), "vertices")
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        if self.vertex_rgb is not None:
            self.vertex_rgb = _rgb_to_u8(np.ascontiguousarray(self.vertex_rgb)[:, :3])
        if (self.uv is None) != (self.texture is None):
            raise ValueError("uv and texture go together")
        if self.uv is not None:
            self.uv = np.ascontiguousarray(self.uv, dtype=np.float32).reshape(-1, 2)
            if len(self.uv) != len(self.vertices):
                raise ValueError(f"{len(self.uv)} uv rows for {len(self.vertices)} vertices")
            self.texture = _rgb_to_u8(np.ascontiguousarray(self.texture)[..., :3].reshape(-1, 3)).reshape(
                np.shape(self.texture)[0], np.shape(self.texture)[1], 3)
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("face indices out of range")

    def sample_texture(self, uv: np.ndarray) -> np.ndarray:
        """Bilinear texture colour (M, 3) float32 at texture coordinates (M, 2); wraps (repeat)."""
        tex = self.texture.astype(np.float32)
        H, W = tex.shape[:2]
        uv = np.asarray(uv, np.float64)
        uv = np.where((uv < 0) | (uv > 1), uv % 1.0, uv)  # repeat outside [0, 1]; 1.0 is the far edge
        x = uv[:, 0] * (W - 1)
        y = (1.0 - uv[:, 1]) * (H - 1)
        x0 = np.clip(np.floor(x).astype(np.int64), 0, W - 1); x1 = np.minimum(x0 + 1, W - 1)
        y0 = np.clip(np.floor(y).astype(np.int64), 0, H - 1); y1 = np.minimum(y0 + 1, H - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
        bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
        return (top * (1 - fy) + bottom * fy).astype(np.float32)

    def to_point_cloud(self) -> PointCloud:
        """The vertices as a cloud (what fusion labels for a mesh)."""
        return PointCloud(self.vertices, self.vertex_rgb, fields=dict(self.fields),
                          origin=self.origin, source=self.source)


@dataclass
class Camera:
    """Pinhole camera. Convention: OpenCV (x right, y down, z forward), camera-to-world pose."""

    K: np.ndarray                 # (3, 3) float64 intrinsics
    cam_to_world: np.ndarray      # (4, 4) float64, in the cloud's local frame
    width: int
    height: int

    def __post_init__(self):
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.cam_to_world = np.asarray(self.cam_to_world, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)

    @property
    def world_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam_to_world)

    @property
    def center(self) -> np.ndarray:
        return self.cam_to_world[:3, 3].copy()

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) local points -> pixel coordinates (N,2) float (u=col, v=row) and depth (N,)."""
        w2c = self.world_to_cam
        pc = np.asarray(xyz, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (pc[:, :2] / z[:, None]) * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return uv, z

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera at another resolution (e.g. depth and colour of different sizes)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx; K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy; K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(K, self.cam_to_world.copy(), width, height)

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "cam_to_world": self.cam_to_world.tolist(),
                "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(np.array(d["K"]), np.array(d["cam_to_world"]), d["width"], d["height"])


@dataclass
class RGBDFrame:
    """One posed frame. ``depth`` in metres (0 = invalid); either image may be missing."""

    camera: Camera                        # camera of the colour image
    color: np.ndarray | None = None       # (H, W, 3) uint8
    depth: np.ndarray | None = None       # (h, w) float32 metres; may differ in size from colour
    name: str = ""

    @property
    def depth_camera(self) -> Camera:
        """The colour camera rescaled to the depth map's resolution."""
        if self.depth is None:
            return self.camera
        h, w = self.depth.shape
        return self.camera if (w, h) == (self.camera.width, self.camera.height) else self.camera.scaled(w, h)


@dataclass
class FrameSequence:
    """A lazily loaded list of RGB-D frames: cameras are known up front, pixels load on access."""

    cameras: list[Camera]
    names: list[str]
    loader: Callable[[int], RGBDFrame]
    source: str | None = None
    depth_scale: float = 1000.0           # raw depth units per metre (informational)
    has_depth: bool = True
    has_color: bool = True

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, i: int) -> RGBDFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.loader(i % len(self))

    def __iter__(self) -> Iterator[RGBDFrame]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Sequence[int]) -> "FrameSequence":
        idx = list(indices)
        return replace(self, cameras=[self.cameras[i] for i in idx], names=[self.names[i] for i in idx],
                       loader=lambda j, _l=self.loader, _i=idx: _l(_i[j]))


@dataclass
class View:
    """What every 2D model sees: an image, its depth, its camera, and pixel<->point links.

    Produced both by posed RGB-D frames (projection + depth test) and by the renderer for bare
    clouds and meshes. Fusion uses only ``point_ids``/``pixels``: the visible points of this view
    and the pixel each falls on, so the visibility decision is made once, in the views stage.
    """

    camera: Camera
    rgb: np.ndarray                       # (H, W, 3) uint8
    depth: np.ndarray                     # (H, W) float32 metres, 0 = nothing seen
    index: np.ndarray                     # (H, W) int64 point (or face) id seen at a pixel, -1 = none
    point_ids: np.ndarray                 # (M,) int64 visible points
    pixels: np.ndarray                    # (M, 2) int32 (row, col) of each visible point
    name: str = ""
    granularity: str = "scene"            # e.g. "frame", "scene", "mid", "close"
    meta: dict = field(default_factory=dict)

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


@dataclass
class ViewFeatures:
    """One view's 2D features in an encoder's embedding space, stored compactly.

    A 640x480 map of 512-d features would be 600 MB; instead keep a low-resolution dense grid
    plus a region (mask) map with one feature per region, and sample them only at the pixels
    where fusion needs them. Per-pixel feature = ``blend`` * region feature + (1 - blend) *
    dense feature where a region covers the pixel, else the dense feature; L2-normalised.
    """

    image_hw: tuple[int, int]                 # (H, W) of the view
    dense: np.ndarray | None = None           # (h, w, D) float16 grid over the whole image
    regions: np.ndarray | None = None         # (H, W) int32 region id, -1 = none
    region_features: np.ndarray | None = None  # (R, D) float16/float32
    blend: float = 0.5
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        src = self.region_features if self.region_features is not None else self.dense
        return int(src.shape[-1])

    def sample(self, pixels: np.ndarray) -> np.ndarray:
        """Features (M, D) float32 at integer pixels (M, 2) = (row, col); zero rows where none."""
        pixels = np.asarray(pixels)
        H, W = self.image_hw
        have = np.zeros(len(pixels), bool)
        if self.dense is not None:
            out = _bilinear(self.dense, pixels, H, W)
            have[:] = True
        else:
            out = np.zeros((len(pixels), self.dim), np.float32)
        if self.regions is not None and self.region_features is not None:
            rid = self.regions[pixels[:, 0], pixels[:, 1]]
            m = np.flatnonzero(rid >= 0)
            rf = np.asarray(self.region_features, np.float32)[rid[m]]
            if self.dense is not None:  # blend in place: out = blend * region + (1 - blend) * dense
                rf *= self.blend
                rf += (1.0 - self.blend) * out[m]
            out[m] = rf
            have[m] = True
        norm = np.linalg.norm(out, axis=1)
        scale = np.where(have & (norm > 1e-8), 1.0 / np.maximum(norm, 1e-8), 0.0).astype(np.float32)
        out *= scale[:, None]
        return out


def _bilinear(grid: np.ndarray, pixels: np.ndarray, H: int, W: int) -> np.ndarray:
    """Sample a (h, w, D) grid that spans an (H, W) image at pixel centres (border-clamped).

    torch's grid_sample does it multi-threaded without four (M, D) gather temporaries.
    """
    import torch

    h, w, _ = grid.shape
    x = (pixels[:, 1].astype(np.float32) + 0.5) * (w / W) - 0.5  # grid cell-centre coordinates
    y = (pixels[:, 0].astype(np.float32) + 0.5) * (h / H) - 0.5
    pts = torch.from_numpy(np.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], 1))[None, None]
    g = torch.from_numpy(np.ascontiguousarray(grid, np.float32)).permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(g, pts, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.contiguous().numpy()


@dataclass
class FeatureCloud:
    """A cloud with one feature per point: the output of fusion or of the distilled backbone.

    ``encoder`` names the encoder spec whose text embeddings live in the same space (see
    pc_ovseg.encoders.get_encoder); ``class_names`` is set when the features are a label space
    (one-hot oracle features, fused label maps), where a class name is its own text embedding.
    ``labelset`` is the result header of the labelling made from these features (names, ids,
    prompts, LAS codes, colours; pc_ovseg.export.result_header), so evaluating the file labels
    it the same way its exports were labelled.
    """

    cloud: PointCloud
    features: np.ndarray                  # (N, D) float16, L2-normalised; zero rows = unseen
    weight: np.ndarray                    # (N,) float32 fused confidence, 0 = no view saw the point
    view_count: np.ndarray                # (N,) uint16 views that saw the point
    encoder: str = ""
    class_names: list[str] | None = None
    meta: dict = field(default_factory=dict)
    labelset: dict | None = None
    basis: np.ndarray | None = None       # (D, k) float32: features are k principal components of D-d ones

    @property
    def text_dim(self) -> int:
        """Dimension of the encoder's text embeddings (``basis`` projects them to the features')."""
        return int(self.basis.shape[0]) if self.basis is not None else int(self.features.shape[1])

    @property
    def seen(self) -> np.ndarray:
        return self.weight > 0

    @property
    def coverage(self) -> float:
        return float(self.seen.mean()) if len(self.weight) else 0.0

    def save(self, path) -> None:
        """One self-contained .npz (geometry, colour, fields, features) that query/view/distill read."""
        import json
        c = self.cloud
        arrays = {"xyz": c.xyz, "origin": c.origin, "features": self.features.astype(np.float16),
                  "weight": self.weight.astype(np.float32), "view_count": self.view_count.astype(np.uint16)}
        if c.rgb is not None:
            arrays["rgb"] = c.rgb
        if c.normals is not None:
            arrays["normals"] = c.normals
        for k, v in c.fields.items():
            arrays[f"field.{k}"] = v
        if self.basis is not None:
            arrays["basis"] = self.basis.astype(np.float32)
        header = {"encoder": self.encoder, "class_names": self.class_names, "meta": self.meta,
                  "source": c.source, "format": "pc_ovseg.FeatureCloud/1", "labelset": self.labelset}
        arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), np.uint8)
        problem = self.problem()
        if problem:  # never write a result that load would refuse (e.g. NaN features)
            from .errors import InputError
            raise InputError(path, f"refusing to write an inconsistent result: {problem}")
        from .store import atomic_write
        with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a killed run never leaves a torn result
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "FeatureCloud":
        """Read and check a result: every array must agree with the points, features must be
        finite, so a torn or edited file fails here in one line, not inside a later stage."""
        import json
        import zipfile

        from .errors import InputError, check_input_path
        check_input_path(path)
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with z:
                header = json.loads(bytes(z["header"]).decode())
                if not isinstance(header, dict):
                    raise ValueError("its header is not a JSON object")
                arrays = {k: z[k] for k in z.files if k != "header"}
        except zipfile.BadZipFile as exc:
            raise InputError(path, f"not a pc_ovseg feature file (not a readable .npz: {exc})") from None
        except KeyError as exc:
            raise InputError(path, f"not a pc_ovseg feature file ({exc.args[0] if exc.args else exc})") from None
        except (OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not a pc_ovseg feature file ({type(exc).__name__}: {exc})") from None
        try:
            fields = {k[6:]: v for k, v in arrays.items() if k.startswith("field.")}
            cloud = PointCloud(arrays["xyz"], arrays.get("rgb"), arrays.get("normals"), fields,
                               arrays.get("origin", np.zeros(3)), source=header.get("source"))
            fc = cls(cloud, arrays["features"], arrays["weight"], arrays["view_count"],
                     str(header.get("encoder") or ""), header.get("class_names"), header.get("meta") or {},
                     header.get("labelset"), arrays.get("basis"))
        except KeyError as exc:
            raise InputError(path, f"not a pc_ovseg feature file (no {exc} array)") from None
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"damaged feature file ({exc})") from None
        problem = fc.problem()
        if problem:
            raise InputError(path, f"damaged feature file: {problem}")
        return fc

    def problem(self) -> str | None:
        """What makes this result inconsistent (None when it is sound): checked on load and save."""
        n = len(self.cloud)
        f = self.features
        if f.ndim != 2 or f.shape[0] != n:
            return f"features have shape {f.shape}, expected ({n:,}, D) for {n:,} points"
        if f.shape[1] == 0:
            return "features have no dimensions"
        for name in ("weight", "view_count"):
            a = getattr(self, name)
            if a.ndim != 1 or len(a) != n:
                return f"{name} has shape {a.shape}, expected ({n:,},) for {n:,} points"
        if not np.issubdtype(f.dtype, np.floating) or not np.issubdtype(self.weight.dtype, np.number):
            return f"features must be floating point, got {f.dtype}"
        if not np.isfinite(f).all():
            return f"{int((~np.isfinite(f).all(1)).sum()):,} points have non-finite (NaN/inf) features"
        if not np.isfinite(self.weight).all() or (self.weight < 0).any():
            return "weights must be finite and >= 0"
        if self.basis is not None and (self.basis.ndim != 2 or self.basis.shape[1] != f.shape[1]
                                       or not np.isfinite(self.basis).all()):
            return f"basis has shape {self.basis.shape}, expected (D, {f.shape[1]}) for {f.shape[1]}-d features"
        if self.class_names is not None and (not isinstance(self.class_names, list) or len(self.class_names) != self.text_dim):
            return f"{len(self.class_names) if isinstance(self.class_names, list) else 'no'} class names for " \
                   f"{self.text_dim}-d label-space features"
        return None


def is_feature_file(path) -> bool:
    """Whether ``path`` is a FeatureCloud .npz (one check for every command that takes either a
    result or a plain cloud)."""
    import zipfile
    try:
        with np.load(path, allow_pickle=False) as z:
            return isinstance(z, np.lib.npyio.NpzFile) and "features" in z.files and "header" in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
