"""Posed RGB-D frames -> Views: frame selection, depth-test visibility, clouds from depth.

Visibility is decided once here: a point is seen by a frame when it projects inside the image
(minus a border, where depth and colour are least reliable) onto a depth d with
|d - z| <= max(abs_tol, rel_tol * d). OpenScene uses rel_tol=0.25 (abs 0), OpenMask3D abs_tol=0.2 m;
the defaults (5 cm / 5 %) are stricter because fused clouds from good depth agree to ~2 cm.
Frames without depth get a depth map by splatting the cloud itself into the frame.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import native
from ..data import Camera, FrameSequence, PointCloud, RGBDFrame, View
from ..errors import InputError
from .render import SPLAT_SCALE, VIS_TOL_SPACING, splat_radius

BORDER = 10          # image border (px) left out of visibility: depth and colour are least reliable there
MAX_VIS_WIDTH = 640   # frames without depth are z-buffered at most this wide (speed; enough for visibility)
# with discs up to 24 px there, so surfaces close to a hand-held camera stay closed
#: Kinect / PrimeSense intrinsics at 640x480 for organised clouds that carry none (mOSD, PCL grabbers).
KINECT_K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])


def _progress(it, total: int, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    import sys
    return tqdm(it, total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)


def select_frames(frames: FrameSequence, *, max_views: int | None = None, stride: int | None = None,
                  keyframes: bool = False, min_translation: float = 0.1, min_rotation_deg: float = 15) -> list[int]:
    """Indices of the frames to use: every ``stride``-th, or keyframes (a frame is kept once the
    camera moved ``min_translation`` metres or turned ``min_rotation_deg`` since the last kept
    one), then thinned evenly to at most ``max_views``."""
    n = len(frames)
    idx = list(range(0, n, max(int(stride or 1), 1)))
    if keyframes and idx:
        kept = [idx[0]]
        last = frames.cameras[idx[0]].cam_to_world
        for i in idx[1:]:
            pose = frames.cameras[i].cam_to_world
            move, turn = pose_change(last, pose)
            if move >= min_translation or turn >= min_rotation_deg:
                kept.append(i)
                last = pose
        idx = kept
    if max_views is not None and len(idx) > max_views:
        if max_views <= 0:
            return []
        pick = np.unique(np.round(np.linspace(0, len(idx) - 1, int(max_views))).astype(int))
        idx = [idx[i] for i in pick]
    return idx


def pose_change(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far camera pose ``b`` is from ``a`` (4x4 camera-to-world): metres moved, degrees turned."""
    move = float(np.linalg.norm(b[:3, 3] - a[:3, 3]))
    cos = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2
    return move, float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def backproject(frame: RGBDFrame, *, stride: int = 1, border: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """World (local-frame) points of a frame's valid depth pixels (at least ``border`` colour-image
    pixels inside the image, as frame_view tests them) and their colours (or None)."""
    if frame.depth is None:
        raise ValueError(f"frame {frame.name!r} has no depth")
    cam = frame.depth_camera
    d = frame.depth[::stride, ::stride]
    rows, cols = np.nonzero(np.isfinite(d) & (d > 0))
    z = d[rows, cols].astype(np.float64)
    rows, cols = rows * stride, cols * stride
    if border:
        b = int(np.ceil(border * cam.width / frame.camera.width))
        H, W = frame.depth.shape[:2]
        keep = (rows >= b) & (cols >= b) & (rows < H - b) & (cols < W - b)
        rows, cols, z = rows[keep], cols[keep], z[keep]
    K = cam.K
    x, y = (cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z
    R, t = cam.cam_to_world[:3, :3], cam.cam_to_world[:3, 3]
    xyz = np.empty((len(z), 3))
    for a in range(3):  # per axis, not (N, 3) @ (3, 3): that small matmul cost 20 ms a frame
        xyz[:, a] = R[a, 0] * x + R[a, 1] * y + R[a, 2] * z + t[a]
    rgb = None
    if frame.color is not None and frame.color.shape[:2] == frame.depth.shape[:2] == (cam.height, cam.width):
        rgb = frame.color[rows, cols]  # depth on the colour grid: each pixel projects onto itself
    elif frame.color is not None:
        uv, _ = frame.camera.project(xyz)
        H, W = frame.color.shape[:2]
        c = np.clip(np.floor(uv[:, 0] + 0.5).astype(int), 0, W - 1)
        r = np.clip(np.floor(uv[:, 1] + 0.5).astype(int), 0, H - 1)
        rgb = frame.color[r, c]
    return xyz.astype(np.float32), rgb


def cloud_from_frames(frames: FrameSequence, *, voxel_size: float = 0.02, max_frames: int | None = None,
                      border: int = 0, progress: bool = True) -> PointCloud:
    """Back-project the depth of (up to ``max_frames`` evenly chosen) frames, with colour, and keep
    one averaged point per ``voxel_size`` voxel, so an RGB-D folder alone is a complete input
    (``border``: see backproject).
    The progress bar shows even when stderr is not a terminal: this is the long silent step of
    an RGB-D run otherwise."""
    from tqdm.auto import tqdm
    if not frames.has_depth:
        raise InputError(frames.source, "frames have no depth: a point cloud must be given with them")
    idx = select_frames(frames, max_views=max_frames)
    parts_xyz, parts_rgb = [], []

    def merge():
        xyz = np.concatenate(parts_xyz)
        rgb = np.concatenate(parts_rgb)
        mean, inv = native.voxel_downsample(xyz, voxel_size)
        cnt = np.bincount(inv, minlength=len(mean)).astype(np.float64)
        col = np.stack([np.bincount(inv, rgb[:, a].astype(np.float64), len(mean)) for a in range(3)], 1)
        parts_xyz[:] = [mean]
        parts_rgb[:] = [np.clip(col / cnt[:, None] + 0.5, 0, 255).astype(np.uint8)]

    for i in tqdm(idx, desc="cloud from frames", unit="frame", disable=not progress, leave=False):
        f = frames[i]
        if f.depth is None:
            continue
        xyz, rgb = backproject(f, border=border)
        mean, inv = native.voxel_downsample(xyz, voxel_size)
        if rgb is None:
            rgb = np.full((len(xyz), 3), 128, np.uint8)
        cnt = np.bincount(inv, minlength=len(mean)).astype(np.float64)
        col = np.stack([np.bincount(inv, rgb[:, a].astype(np.float64), len(mean)) for a in range(3)], 1)
        parts_xyz.append(mean)
        parts_rgb.append((col / cnt[:, None]).astype(np.float32))
        if len(parts_xyz) >= 8:
            merge()
    if not parts_xyz:
        raise InputError(frames.source, "no frame has valid depth")
    merge()
    return PointCloud(parts_xyz[0], parts_rgb[0] if frames.has_color else None, source=frames.source)


def _index_map(cloud: PointCloud, camera: Camera, ids: np.ndarray) -> np.ndarray:
    """Index map of the visible points only. A visible point owns the pixel it projects to (the
    nearest one where two share it); discs fill the pixels between points. Discs alone would let
    a point's neighbour in front (within the depth tolerance) take its pixel, and the labels read
    there (oracle maps, masks) bleed across object edges."""
    if not len(ids):
        return np.full((camera.height, camera.width), -1, np.int64)
    xyz = cloud.xyz[ids]
    _, own = native.splat(xyz, camera, radius=None)
    _, disc = native.splat(xyz, camera, radius=splat_radius(cloud)[ids])
    index = np.where(own >= 0, own, disc)
    return np.where(index >= 0, ids[np.maximum(index, 0)], -1)


def _pixels_in(camera: Camera, xyz: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    uv, _ = camera.project(xyz)
    pix = np.floor(uv[:, ::-1] + 0.5)
    ok = np.isfinite(pix).all(1)
    pix = np.where(ok[:, None], pix, -1).astype(np.int64)
    ok &= (pix[:, 0] >= border) & (pix[:, 1] >= border)
    ok &= (pix[:, 0] < camera.height - border) & (pix[:, 1] < camera.width - border)
    return pix.astype(np.int32), ok


def frame_view(frame: RGBDFrame, cloud: PointCloud, *, rel_tol: float = 0.05, abs_tol: float = 0.05,
               border: int = BORDER, name: str = "", meta: dict | None = None) -> View:
    """One frame's View: the cloud's points that pass the depth test, on the colour image's grid."""
    cam = frame.camera
    if frame.depth is not None:
        test_cam, test_depth, point_tol = frame.depth_camera, np.asarray(frame.depth, np.float32), None
    else:  # no sensor depth: z-buffer the cloud itself (at most MAX_VIS_WIDTH wide)
        s = min(1.0, MAX_VIS_WIDTH / cam.width)
        test_cam = cam if s == 1.0 else cam.scaled(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        test_depth, _ = native.splat(cloud.xyz, test_cam, radius=splat_radius(cloud), max_pixel_radius=24.0)
        point_tol = VIS_TOL_SPACING / SPLAT_SCALE * splat_radius(cloud)
    sb = int(np.ceil(border * test_cam.width / cam.width))
    ids, pix, _ = native.depth_test(cloud.xyz, test_cam, test_depth, rel_tol=rel_tol, abs_tol=abs_tol,
                                    point_tol=point_tol, border=sb)
    same = (test_cam.width, test_cam.height) == (cam.width, cam.height)
    if not same:  # map visible points onto the colour grid (intrinsics rescaled)
        pix, ok = _pixels_in(cam, cloud.xyz[ids], border)
        ids, pix = ids[ok], pix[ok]
    H, W = cam.height, cam.width
    if same:
        depth = test_depth
    else:  # nearest-neighbour resample of the test depth onto the colour grid
        rr = np.minimum(((np.arange(H) + 0.5) * test_depth.shape[0] / H).astype(int), test_depth.shape[0] - 1)
        cc = np.minimum(((np.arange(W) + 0.5) * test_depth.shape[1] / W).astype(int), test_depth.shape[1] - 1)
        depth = test_depth[rr[:, None], cc[None, :]]
    index = _index_map(cloud, cam, ids)
    if frame.color is not None:
        rgb = np.ascontiguousarray(frame.color[..., :3], dtype=np.uint8)
        if rgb.shape[:2] != (H, W):
            raise InputError(frame.name, f"colour image is {rgb.shape[1]}x{rgb.shape[0]}, camera says {W}x{H}")
    else:  # no colour image: paint the cloud's colours through the index map
        rgb = np.full((H, W, 3), 128, np.uint8)
        if cloud.rgb is not None:
            m = index >= 0
            rgb[m] = cloud.rgb[index[m]]
    return View(cam, rgb, np.ascontiguousarray(depth, np.float32), index, ids, pix, name=name or frame.name,
                granularity="frame", meta=dict(meta or {}))


def frame_views(frames: FrameSequence, cloud: PointCloud, *, max_views: int | None = None, stride: int | None = None,
                keyframes: bool = False, rel_tol: float = 0.05, abs_tol: float = 0.05, border: int = BORDER,
                progress: bool = True) -> Iterator[View]:
    """Views of ``cloud`` from the selected frames (see select_frames and frame_view)."""
    idx = select_frames(frames, max_views=max_views, stride=stride, keyframes=keyframes)
    for i in _progress(idx, len(idx), progress, "frames"):
        yield frame_view(frames[i], cloud, rel_tol=rel_tol, abs_tol=abs_tol, border=border,
                         name=frames.names[i], meta={"frame": int(i)})


def organized_view(cloud: PointCloud, K: np.ndarray | None = None) -> View:
    """The View of an organised cloud (e.g. mOSD Kinect PCDs): the camera sits at the origin
    looking down +z, each point is its own pixel, NaN points are invisible. ``K`` defaults to the
    Kinect's fx=fy=525, cx=319.5, cy=239.5 (scaled to the grid if it is not 640x480)."""
    if cloud.grid_shape is None:
        raise InputError(cloud.source, "not an organised cloud (no grid shape): use render_view or frame_views")
    H, W = cloud.grid_shape
    cam = Camera(KINECT_K, np.eye(4), 640, 480) if K is None else Camera(K, np.eye(4), W, H)
    if (cam.width, cam.height) != (W, H):
        cam = cam.scaled(W, H)
    xyz = cloud.xyz
    ok = np.isfinite(xyz).all(1) & (np.nan_to_num(xyz[:, 2]) > 0)
    ids = np.flatnonzero(ok)
    pix = np.stack([ids // W, ids % W], 1).astype(np.int32)
    depth = np.where(ok, np.nan_to_num(xyz[:, 2]), 0).astype(np.float32).reshape(H, W)
    index = np.where(ok, np.arange(len(xyz)), -1).reshape(H, W)
    if cloud.rgb is not None:
        rgb = np.where(ok[:, None], cloud.rgb, 0).astype(np.uint8).reshape(H, W, 3)
    else:
        from .render import _ramp
        rgb = (_ramp(depth.ravel() / max(depth.max(), 1e-6)) * 255 * ok[:, None]).astype(np.uint8).reshape(H, W, 3)
    return View(cam, rgb, depth, index, ids.astype(np.int64), pix, name=cloud.source or "organised",
                granularity="frame", meta={"organised": True})
