"""Posed RGB-D sequences: 7-Scenes, ScanNet's exported layout, the ScanNet sample's scene.json,
and a JSON manifest for anything else (schema in docs/io.md).

Cameras (intrinsics + camera-to-world, OpenCV axes) are read up front; pixels load lazily in
``FrameSequence.loader``. Depth becomes float32 metres with invalid values set to 0. Colour and
depth may differ in size (Kinect-style) but must share the aspect ratio within 1.5 %; depth
taken with its own intrinsics is resampled onto the colour camera's (scaled) grid so that
``RGBDFrame.depth_camera`` is exact.
"""
from __future__ import annotations

import glob
import json
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..data import Camera, FrameSequence, RGBDFrame
from ..errors import InputError
from ._common import check_file, exc_text, register

ASPECT_TOLERANCE = 0.015
MAX_PLAUSIBLE_DEPTH_M = 100.0   # median valid depth above this = wrong depth scale
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


# --- small readers -------------------------------------------------------------------------------

def read_matrix(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated numeric matrix of a known shape, finite, from a text file."""
    check_file(path)
    try:
        with open(path, "rb") as f:
            vals = np.array(f.read().replace(b",", b" ").split(), dtype=np.float64)
    except ValueError:
        raise InputError(path, "matrix file holds non-numeric text") from None
    if vals.size != shape[0] * shape[1]:
        raise InputError(path, f"expected a {shape[0]}x{shape[1]} matrix, found {vals.size} numbers")
    return vals.reshape(shape)


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header only."""
    from PIL import Image, UnidentifiedImageError
    check_file(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"not a readable image ({type(exc).__name__})") from None


def load_color(path: str, data: bytes | None = None) -> np.ndarray:
    """RGB uint8 of an image file, or of its encoded ``data`` (a .sens frame) named by ``path``."""
    import io
    from PIL import Image, UnidentifiedImageError
    if data is None:
        check_file(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"not a readable image ({exc_text(exc)})") from None


def load_depth(path: str, scale: float, invalid=(0,)) -> np.ndarray:
    """Depth image (16-bit PNG, or .npy) -> float32 metres, invalid values -> 0."""
    check_file(path)
    if path.lower().endswith(".npy"):
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise InputError(path, "not a valid .npy depth map") from None
    else:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as im:
                raw = np.asarray(im)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            raise InputError(path, f"not a readable depth image ({exc_text(exc)})") from None
    return depth_metres(path, raw, scale, invalid)


def depth_metres(path: str, raw: np.ndarray, scale: float, invalid=(0,)) -> np.ndarray:
    """Raw depth units -> float32 metres with invalid values 0, checked (a 2D numeric map of a
    plausible scale); ``path`` names the source in errors."""
    if raw.ndim == 3 and raw.shape[2] in (1, 3, 4):
        raise InputError(path, f"depth must be single-channel, got {raw.shape[2]} channels")
    if raw.ndim != 2:
        raise InputError(path, f"depth must be a 2D image, got shape {raw.shape}")
    if raw.dtype == np.uint8:
        raise InputError(path, "depth is 8-bit (a colour/preview image?); expected 16-bit or float depth")
    if raw.dtype == bool:  # PIL mode '1': a mask, not a measurement
        raise InputError(path, "depth is 1-bit (a mask?); expected 16-bit or float depth")
    if raw.dtype.kind not in "uif":
        raise InputError(path, f"depth must hold numbers (16-bit or float), got dtype {raw.dtype}")
    bad = ~np.isfinite(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
    for v in invalid:
        bad |= raw == v
    d = raw.astype(np.float32) / np.float32(scale)
    d[bad | (d < 0)] = 0.0
    valid = d[d > 0]
    if valid.size and float(np.median(valid)) > MAX_PLAUSIBLE_DEPTH_M:
        raise InputError(path, f"median depth {float(np.median(valid)):.0f} m is implausible: "
                               f"wrong depth scale ({scale:g} units per metre)?")
    return d


def check_aspect(path: str, color_wh, depth_wh) -> None:
    (cw, ch), (dw, dh) = color_wh, depth_wh
    if min(cw, ch, dw, dh) <= 0:
        raise InputError(path, "image has zero size")
    if abs((cw / ch) / (dw / dh) - 1.0) > ASPECT_TOLERANCE:
        raise InputError(path, f"depth {dw}x{dh} and colour {cw}x{ch} have different aspect ratios")


def check_pose(path: str, pose: np.ndarray) -> np.ndarray:
    if not np.isfinite(pose).all():
        raise InputError(path, "pose has NaN/Inf values")
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(path, f"pose's last row is {pose[3].tolist()}, expected [0, 0, 0, 1]")
    r = pose[:3, :3]
    if abs(np.linalg.det(r) - 1.0) > 1e-2 or not np.allclose(r @ r.T, np.eye(3), atol=1e-2):
        raise InputError(path, "pose rotation is not orthonormal")
    return pose


def _check_K(path: str, K: np.ndarray) -> np.ndarray:
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(path, f"invalid intrinsics (fx={K[0, 0]:g}, fy={K[1, 1]:g})")
    return K


# --- one generic sequence of file-backed frames ----------------------------------------------------

@dataclass
class _Frames:
    """What every layout resolves to: per-frame files plus calibration."""

    source: str
    K: np.ndarray                          # colour intrinsics
    size_wh: tuple[int, int]               # colour image size
    poses: list[np.ndarray]
    names: list[str]
    color: list[str | None]
    depth: list[str | None]
    depth_scale: float = 1000.0
    invalid_depth: tuple = (0,)
    K_depth: np.ndarray | None = None      # depth intrinsics when they are not the scaled colour ones
    depth_wh: tuple[int, int] | None = None
    cameras: list[Camera] = field(default_factory=list)

    def build(self) -> FrameSequence:
        if not self.poses:
            raise InputError(self.source, "holds no frames")
        w, h = self.size_wh
        self.cameras = [Camera(self.K, p, w, h) for p in self.poses]
        has_depth = any(d is not None for d in self.depth)
        has_color = any(c is not None for c in self.color)
        if has_depth and self.depth_wh is None:
            first = next(d for d in self.depth if d is not None)
            self.depth_wh = _image_size(first) if not first.endswith(".npy") else None
        if has_depth and self.depth_wh is not None:
            check_aspect(next(d for d in self.depth if d is not None), self.size_wh, self.depth_wh)
        seq = FrameSequence(self.cameras, self.names, self.load, source=self.source,
                            depth_scale=self.depth_scale, has_depth=has_depth, has_color=has_color)
        self.load(0)  # fail now, not mid-pipeline, on unreadable images / wrong depth scale
        return seq

    def load(self, i: int) -> RGBDFrame:
        cam = self.cameras[i]
        color = load_color(self.color[i]) if self.color[i] else None
        if color is not None and (color.shape[1], color.shape[0]) != (cam.width, cam.height):
            raise InputError(self.color[i], f"colour image is {color.shape[1]}x{color.shape[0]}, "
                                            f"calibration says {cam.width}x{cam.height}")
        depth = None
        if self.depth[i]:
            depth = load_depth(self.depth[i], self.depth_scale, self.invalid_depth)
            check_aspect(self.depth[i], (cam.width, cam.height), (depth.shape[1], depth.shape[0]))
            if self.K_depth is not None:
                depth = resample_depth(depth, self.K_depth, cam.scaled(depth.shape[1], depth.shape[0]).K)
        return RGBDFrame(cam, color, depth, self.names[i])


def resample_depth(depth: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray) -> np.ndarray:
    """Nearest-neighbour warp of a depth map between two intrinsics of the same optical centre."""
    if np.allclose(K_src, K_dst, rtol=1e-4, atol=1e-3):
        return depth
    h, w = depth.shape
    u = (np.arange(w) - K_dst[0, 2]) / K_dst[0, 0] * K_src[0, 0] + K_src[0, 2]
    v = (np.arange(h) - K_dst[1, 2]) / K_dst[1, 1] * K_src[1, 1] + K_src[1, 2]
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    ok_u, ok_v = (ui >= 0) & (ui < w), (vi >= 0) & (vi < h)
    out = depth[np.clip(vi, 0, h - 1)][:, np.clip(ui, 0, w - 1)]
    out[~ok_v] = 0.0
    out[:, ~ok_u] = 0.0
    return out


def _sorted_frames(paths: list[str], pattern: str) -> list[tuple[str, str]]:
    """(frame id, path) sorted numerically by the id captured by ``pattern``."""
    rx = re.compile(pattern)
    out = []
    for p in paths:
        m = rx.fullmatch(os.path.basename(p))
        if m:
            out.append((m.group(1), p))
    return sorted(out, key=lambda t: (int(t[0]) if t[0].isdigit() else 0, t[0]))


def _valid_pose(path: str, pose: np.ndarray) -> bool:
    """ScanNet/7-Scenes mark lost tracking with -inf/NaN poses: such frames are skipped."""
    if not np.isfinite(pose).all():
        return False
    check_pose(path, pose)
    return True


# --- 7-Scenes ------------------------------------------------------------------------------------

SEVEN_SCENES_K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])


def _is_7scenes(path: str) -> bool:
    return bool(glob.glob(os.path.join(glob.escape(path), "frame-*.pose.txt"))) or \
        bool(glob.glob(os.path.join(glob.escape(path), "frame-*.color.*")))


def read_7scenes(path: str, layout=None) -> FrameSequence:
    """frame-XXXXXX.{color.png|jpg, depth.png, pose.txt}; camera-intrinsics.txt (else 585/320/240)."""
    files = os.listdir(path)
    colors = dict(_sorted_frames(files, r"frame-(\d+)\.color\.(?:png|jpg|jpeg)"))
    depths = dict(_sorted_frames(files, r"frame-(\d+)\.depth\.png"))
    poses = dict(_sorted_frames(files, r"frame-(\d+)\.pose\.txt"))
    ids = sorted(set(colors) | set(depths), key=int)
    if not ids:
        raise InputError(path, "7-Scenes folder has no frame-*.color/depth images")
    kf = os.path.join(path, "camera-intrinsics.txt")
    K = _check_K(kf, read_matrix(kf, (3, 3))) if os.path.exists(kf) else SEVEN_SCENES_K
    fr = _Frames(path, K, (0, 0), [], [], [], [], depth_scale=1000.0, invalid_depth=(0, 65535))
    skipped = 0
    for i in ids:
        if i not in poses:
            raise InputError(os.path.join(path, f"frame-{i}.pose.txt"), "missing pose for frame " + i)
        if i not in depths:
            raise InputError(os.path.join(path, f"frame-{i}.depth.png"), "missing depth for frame " + i)
        pf = os.path.join(path, poses[i])
        pose = read_matrix(pf, (4, 4))
        if not _valid_pose(pf, pose):
            skipped += 1
            continue
        fr.poses.append(pose)
        fr.names.append(f"frame-{i}")
        fr.color.append(os.path.join(path, colors[i]) if i in colors else None)
        fr.depth.append(os.path.join(path, depths[i]))
    if skipped and not fr.poses:
        raise InputError(path, f"no frame has a valid pose (all {skipped} are NaN/Inf)")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} frames with invalid (non-finite) poses")
    first = next((c for c in fr.color if c), None)
    fr.size_wh = _image_size(first) if first else _image_size(fr.depth[0]) if fr.depth else (640, 480)
    return fr.build()


register("7scenes", "frames", folder_probe=_is_7scenes)(read_7scenes)


# --- ScanNet exported layout (color/ depth/ pose/ intrinsic/) ------------------------------------

def _is_scannet(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "pose")) and (
        os.path.isdir(os.path.join(path, "color")) or os.path.isdir(os.path.join(path, "depth")))


def _scannet_K(path: str, name: str) -> np.ndarray | None:
    f = os.path.join(path, "intrinsic", name)
    if not os.path.exists(f):
        return None
    m = read_matrix(f, (4, 4))
    return _check_K(f, m[:3, :3])


def read_scannet(path: str, layout=None) -> FrameSequence:
    """ScanNet SensReader export: color/N.jpg, depth/N.png (mm), pose/N.txt, intrinsic/*.txt."""
    cdir, ddir, pdir = (os.path.join(path, d) for d in ("color", "depth", "pose"))
    ls = lambda d: [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []  # noqa: E731
    colors = dict(_sorted_frames(ls(cdir), r"(\d+)\.(?:jpg|jpeg|png)"))
    depths = dict(_sorted_frames(ls(ddir), r"(\d+)\.png"))
    poses = dict(_sorted_frames(ls(pdir), r"(\d+)\.txt"))
    ids = sorted(set(colors) | set(depths), key=int)
    if not ids:
        raise InputError(path, "ScanNet folder has no color/ or depth/ images")
    Kc, Kd = _scannet_K(path, "intrinsic_color.txt"), _scannet_K(path, "intrinsic_depth.txt")
    if Kc is None and Kd is None:
        raise InputError(os.path.join(path, "intrinsic"), "missing intrinsic_color.txt / intrinsic_depth.txt")
    fr = _Frames(path, Kc if Kc is not None else Kd, (0, 0), [], [], [], [], depth_scale=1000.0,
                 invalid_depth=(0,))
    skipped = 0
    for i in ids:
        if i not in poses:
            raise InputError(os.path.join(pdir, f"{i}.txt"), f"missing pose for frame {i}")
        pose = read_matrix(poses[i], (4, 4))
        if not _valid_pose(poses[i], pose):
            skipped += 1
            continue
        fr.poses.append(pose)
        fr.names.append(i)
        fr.color.append(colors.get(i))
        fr.depth.append(depths.get(i))
    if skipped and not fr.poses:
        raise InputError(path, f"no frame has a valid pose (all {skipped} are NaN/Inf)")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} frames with invalid (non-finite) poses")
    first_c = next((c for c in fr.color if c), None)
    first_d = next((d for d in fr.depth if d), None)
    fr.size_wh = _image_size(first_c) if first_c else _image_size(first_d)
    if first_c and first_d and Kd is not None and Kc is not None:
        fr.K_depth = Kd
    if Kc is None:
        fr.color = [None] * len(fr.color)  # colour without calibration cannot be used
    return fr.build()


register("scannet", "frames", folder_probe=_is_scannet)(read_scannet)


# --- JSON: the ScanNet sample's scene.json and the generic manifest ------------------------------

def _load_json(path: str) -> dict:
    check_file(path)
    try:
        with open(path, "rb") as f:
            d = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise InputError(path, "JSON top level must be an object")
    return d


def _is_scene_json(d: dict) -> bool:
    return "intrinsics_4x4" in d and "images" in d


def _is_manifest(d: dict) -> bool:
    return "frames" in d


def _matrix(path: str, v, shape, what: str) -> np.ndarray:
    try:
        m = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not numeric") from None
    if m.shape != shape:
        raise InputError(path, f"{what} must be {shape[0]}x{shape[1]}, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, f"{what} has NaN/Inf values")
    return m


def read_scene_json(path: str, d: dict) -> FrameSequence:
    """mmdetection3d-style ScanNet sample: posed colour images, no depth."""
    base = os.path.dirname(path)
    K = _check_K(path, _matrix(path, d["intrinsics_4x4"], (4, 4), "intrinsics_4x4")[:3, :3])
    wh = d.get("image_size_wh")
    if not (isinstance(wh, list) and len(wh) == 2):
        raise InputError(path, "image_size_wh must be [width, height]")
    fr = _Frames(path, K, (int(wh[0]), int(wh[1])), [], [], [], [])
    for k, im in enumerate(d["images"]):
        if not isinstance(im, dict) or "path" not in im or "camera_to_world" not in im:
            raise InputError(path, f"images[{k}] needs 'path' and 'camera_to_world'")
        fr.poses.append(check_pose(path, _matrix(path, im["camera_to_world"], (4, 4), f"images[{k}].camera_to_world")))
        fr.names.append(os.path.splitext(os.path.basename(im["path"]))[0])
        cp = os.path.join(base, im["path"])
        if not os.path.isfile(cp):
            raise InputError(path, f"image of images[{k}] not found: {cp}")
        fr.color.append(cp)
        fr.depth.append(None)
    return fr.build()


MANIFEST_FORMAT = "pc_ovseg.frames/1"


def read_manifest(path: str, d: dict) -> FrameSequence:
    """The generic manifest (docs/io.md): per-frame colour/depth/pose, calibration, conventions."""
    base = os.path.dirname(os.path.abspath(path))
    if d.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
        raise InputError(path, f"unsupported manifest format {d['format']!r} (this version reads {MANIFEST_FORMAT})")
    frames = d["frames"]
    if not isinstance(frames, list) or not frames:
        raise InputError(path, "'frames' must be a non-empty list")
    conv = d.get("pose_convention", "camera_to_world")
    if conv not in ("camera_to_world", "world_to_camera"):
        raise InputError(path, f"pose_convention must be camera_to_world or world_to_camera, got {conv!r}")
    axes = d.get("axes", "opencv")
    if axes not in ("opencv", "opengl"):
        raise InputError(path, f"axes must be opencv or opengl, got {axes!r}")
    try:
        scale = float(d.get("depth_scale", 1000.0))
        invalid = tuple(float(v) for v in d.get("invalid_depth", [0]))
    except (TypeError, ValueError):
        raise InputError(path, "depth_scale / invalid_depth must be numbers") from None
    if not scale > 0:
        raise InputError(path, f"depth_scale must be > 0, got {scale}")
    K, wh = _intrinsics(path, d.get("intrinsics"), "intrinsics")
    Kd = None
    if "depth_intrinsics" in d:
        Kd, dwh = _intrinsics(path, d["depth_intrinsics"], "depth_intrinsics")
    fr = _Frames(path, K, wh, [], [], [], [], depth_scale=scale, invalid_depth=invalid, K_depth=Kd)
    if Kd is not None:
        fr.depth_wh = dwh
    origin = np.asarray(d.get("origin", [0, 0, 0]), np.float64)
    resolve = lambda p: None if p is None else (p if os.path.isabs(p) else os.path.join(base, p))  # noqa: E731
    for k, f in enumerate(frames):
        if not isinstance(f, dict):
            raise InputError(path, f"frames[{k}] must be an object")
        if "pose" not in f:
            raise InputError(path, f"frames[{k}] has no pose")
        if f.get("color") is None and f.get("depth") is None:
            raise InputError(path, f"frames[{k}] has neither color nor depth")
        where = resolve(f["pose"]) if isinstance(f["pose"], str) else path
        pose = read_matrix(where, (4, 4)) if isinstance(f["pose"], str) else \
            _matrix(path, f["pose"], (4, 4), f"frames[{k}].pose")
        if not np.isfinite(pose).all():
            raise InputError(where, f"frames[{k}] pose has NaN/Inf values")
        if conv == "world_to_camera":
            check_pose(where, pose)
            pose = np.linalg.inv(pose)
        if axes == "opengl":
            pose = pose @ _GL_TO_CV
        pose = pose.copy()
        pose[:3, 3] -= origin
        fr.poses.append(check_pose(where, pose))
        fr.names.append(str(f.get("name", k)))
        for key, lst in (("color", fr.color), ("depth", fr.depth)):
            p = resolve(f.get(key))
            if p is not None and not os.path.isfile(p):
                raise InputError(path, f"{key} image of frames[{k}] not found: {p}")
            lst.append(p)
    return fr.build()


def _intrinsics(path: str, v, what: str) -> tuple[np.ndarray, tuple[int, int]]:
    if not isinstance(v, dict):
        raise InputError(path, f"{what} must be an object with fx, fy, cx, cy, width, height (or K)")
    try:
        if "K" in v:
            K = _matrix(path, v["K"], (3, 3), f"{what}.K")
        else:
            K = np.array([[float(v["fx"]), 0, float(v["cx"])], [0, float(v["fy"]), float(v["cy"])], [0, 0, 1]])
        wh = (int(v["width"]), int(v["height"]))
    except KeyError as exc:
        raise InputError(path, f"{what} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise InputError(path, f"{what} values must be numbers") from None
    if min(wh) <= 0:
        raise InputError(path, f"{what} image size must be positive")
    return _check_K(path, K), wh


_JSON_KINDS = [("scene.json", _is_scene_json, read_scene_json), ("manifest", _is_manifest, read_manifest)]


def read_json_frames(path: str, layout=None) -> FrameSequence:
    d = _load_json(path)
    for _name, probe, fn in _JSON_KINDS:
        if probe(d):
            try:
                return fn(path, d)
            except InputError:
                raise
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise InputError(path, f"malformed frame manifest ({exc_text(exc)})") from None
    raise InputError(path, "JSON is neither a frame manifest ('frames') nor a scene.json ('intrinsics_4x4', 'images')")


register("json-frames", "frames", exts=(".json",))(read_json_frames)
