"""Camera planning for bare clouds and meshes: cameras that together see (almost) every point.

A planner per scene kind proposes cameras at several granularities (whole scene, mid, close);
the proposals are ordered greedily by how many points each brings closer to a few observations
(coverage first, then the redundancy fusion needs to outvote 2D errors), and then a repair loop
adds close-up cameras aimed at the largest remaining cluster of unseen points (looking along its
normal, with a near plane that cuts away what is in front) until the coverage target is met.
Coverage is always measured with the renderer's depth test, never assumed.
"""
from __future__ import annotations

import numpy as np

from .. import native
from ..data import Camera, Mesh, PointCloud
from ..registry import Registry
from .cameras import PlannedCamera, camera_near, intrinsics, look_at
from ..geometry import point_normals
from .render import MAX_SPLAT_PX, SPLAT_SCALE, VIS_TOL_SPACING, render_mesh, splat_radius

PLANNERS = Registry()
TARGET_COVERAGE = 0.995   # default goal: the done-when bar is 0.99, keep a margin
MAX_REPAIR_VIEWS = 110     # measured: the labelled ScanNet scene needs ~100 to reach 0.995 (166 -> 183 views)
MIN_CLOSER_VIEWS = 4
MIN_VIEWS_PER_POINT = 8   # views wanted per point: fusion outvotes wrong 2D masks by numbers (docs/fusion.md)


def planner(name: str):
    return PLANNERS.register(name)


def _points(scene: PointCloud | Mesh) -> np.ndarray:
    return scene.vertices if isinstance(scene, Mesh) else scene.xyz


def visible_points(scene: PointCloud | Mesh, camera: Camera) -> np.ndarray:
    """Ids of the points (mesh vertices) that pass the depth test in ``camera``'s render (the same
    ids as ``render_view(scene, camera).point_ids``, without the colouring)."""
    if isinstance(scene, Mesh):
        return render_mesh(scene, camera).point_ids
    r = splat_radius(scene)
    near = camera_near(camera)
    depth, _ = native.splat(scene.xyz, camera, radius=r, near=near, max_pixel_radius=MAX_SPLAT_PX)
    ids, _, _ = native.depth_test(scene.xyz, camera, depth, rel_tol=0.01, abs_tol=0.02,
                                  point_tol=VIS_TOL_SPACING / SPLAT_SCALE * r, near=near)
    return ids


def coverage(scene: PointCloud | Mesh, cameras, *, return_mask: bool = False):
    """Fraction of points seen (depth test) by at least one camera (items may be (camera, gran))."""
    n = len(_points(scene))
    seen = np.zeros(n, bool)
    for c in cameras:
        seen[visible_points(scene, c[0] if isinstance(c, tuple) else c)] = True
    cov = float(seen.mean()) if n else 1.0
    return (cov, seen) if return_mask else cov


# --- scene statistics -----------------------------------------------------------------------

class _Frame:
    """Robust extents of a scene (percentiles, so stray points do not blow up the box)."""

    def __init__(self, xyz: np.ndarray, origin: np.ndarray):
        ok = np.isfinite(xyz).all(1)
        self.xyz = xyz[ok]
        self.lo = np.percentile(self.xyz, 0.5, axis=0) if len(self.xyz) else np.zeros(3)
        self.hi = np.percentile(self.xyz, 99.5, axis=0) if len(self.xyz) else np.ones(3)
        self.ext = np.maximum(self.hi - self.lo, 1e-3)
        self.center = (self.lo + self.hi) / 2
        self.sensor = -np.asarray(origin, np.float64)   # world (0,0,0) in the local frame


def detect_kind(scene: PointCloud | Mesh) -> str:
    """The planner a scene needs, from its geometry (z up), in this order:

    - object: under 3 m across.
    - street: a scan over 20 m across with the sensor (the world origin: vehicle LiDAR is stored
      sensor-centred) inside its footprint, 0.5-4 m above the ground.
    - aerial: over 25 m across or 6 m tall (no room is), or multi-return LiDAR
      (``number_of_returns`` above 1: pulses through vegetation, outdoors).
    - indoor: a room: 1.8-6 m tall, enclosed (>= 20 % of points have another point at least
      max(0.5 m, 0.3 x the height) above them in their column of a 40 x 40 grid: walls, ceiling,
      furniture) and no dominant ground plane (under half the points face up). ScanNet: 0.39-0.42
      stacked, 20 % facing up; a quarter of its room 0.25, 23 %.
    - aerial otherwise: a crop of an aerial tile is a height field seen from above, open to the
      sky (shared LAS crops 15 m across: 0-0.21 stacked, 60-100 % facing up).
    """
    f = _Frame(_points(scene), scene.origin)
    horiz = f.ext[:2].max()
    if f.ext.max() < 3.0:
        return "object"
    s = f.sensor
    inside = bool(np.all(s[:2] > f.lo[:2]) and np.all(s[:2] < f.hi[:2]))
    if horiz > 20 and inside and len(f.xyz):
        ground = np.percentile(f.xyz[:, 2], 5)
        if 0.5 < s[2] - ground < 4.0:
            return "street"
    returns = getattr(scene, "fields", {}).get("number_of_returns")
    if horiz > 25 or f.ext[2] > 6 or (returns is not None and len(returns) and np.max(returns) > 1):
        return "aerial"
    if f.ext[2] >= 1.8 and _stacked(f) >= 0.2 and _facing_up(f) < 0.5:
        return "indoor"
    return "aerial"


def _stacked(f: _Frame, cells: int = 40, max_points: int = 200_000) -> float:
    """Fraction of points with another point at least max(0.5 m, 0.3 x height) above them in their
    xy column: walls and ceilings make it large, a height field seen from above keeps it near 0."""
    xyz = f.xyz[:: max(1, len(f.xyz) // max_points)]
    xyz = xyz[np.all((xyz >= f.lo) & (xyz <= f.hi), axis=1)]   # a stray point is no roof
    if not len(xyz):
        return 0.0
    ij = np.floor((xyz[:, :2] - f.lo[:2]) / (f.ext[:2].max() / cells)).astype(np.int64)
    _, col = np.unique(ij[:, 0] * (cells + 1) + ij[:, 1], return_inverse=True)
    top = np.full(col.max() + 1, -np.inf)
    np.maximum.at(top, col, xyz[:, 2])
    return float(np.mean(top[col] - xyz[:, 2] >= max(0.5, 0.3 * f.ext[2])))


def _facing_up(f: _Frame, max_points: int = 20_000) -> float:
    """Fraction of points whose surface faces up (|n_z| > 0.9): ground and roofs, against walls."""
    from ..geometry import estimate_normals
    xyz = f.xyz[:: max(1, len(f.xyz) // max_points)]
    if len(xyz) < 12:
        return 1.0
    return float(np.mean(np.abs(estimate_normals(xyz)[:, 2]) > 0.9))


def _cam(eye, target, w, h, hfov=60.0, near=1e-3, up=(0, 0, 1)) -> PlannedCamera:
    return PlannedCamera(intrinsics(w, h, hfov), look_at(eye, target, up), w, h, near)


def _fit_distance(half_w: float, half_h: float, w: int, h: int, hfov: float) -> float:
    """Distance at which a half_w x half_h rectangle facing the camera fills the image."""
    tx = np.tan(np.radians(hfov) / 2)
    ty = tx * h / w
    return max(half_w / tx, half_h / ty)


def _yaw(xy: np.ndarray) -> float:
    """Heading (radians) of the smallest-area bounding rectangle of the xy points: rooms and city
    blocks are rarely aligned with the scan's axes, and framing them square fills the image."""
    if len(xy) < 10:
        return 0.0
    sub = xy[:: max(1, len(xy) // 5000)]
    best, best_a = np.inf, 0.0
    for a in np.radians(np.arange(0, 90, 3)):
        c, s = np.cos(a), np.sin(a)
        u = sub @ np.array([[c, -s], [s, c]])
        lo, hi = np.percentile(u, [0.5, 99.5], axis=0)
        area = np.prod(hi - lo)
        if area < best:
            best, best_a = area, a
    return float(best_a)


def _nadir(center_xy, half, z_top, w, h, hfov, margin=1.1, near_cut=None, yaw=0.0):
    """Straight-down camera over a box (half extents along the yaw-rotated axes); the long side
    of the box along the image width."""
    hx, hy = half
    c, s = np.cos(yaw), np.sin(yaw)
    up = (-s, c, 0) if hx >= hy else (c, s, 0)
    if hx < hy:
        hx, hy = hy, hx
    d = _fit_distance(hx, hy, w, h, hfov) * margin
    eye = np.array([center_xy[0], center_xy[1], z_top + d])
    near = 1e-3 if near_cut is None else max(eye[2] - near_cut, 1e-3)
    cam = PlannedCamera(intrinsics(w, h, hfov), look_at(eye, [eye[0], eye[1], eye[2] - 1], up), w, h, near)
    return cam


# --- per-kind planners ----------------------------------------------------------------------

@planner("indoor")
def plan_indoor(f: _Frame, w: int, h: int) -> list[tuple[Camera, str]]:
    """Top-down (ceiling cut away), upper-corner views, walls seen from a grid of eye points, close top views."""
    lo, hi, c = f.lo, f.hi, f.center
    H = f.ext[2]
    cut = hi[2] - max(0.12 * H, 0.25)             # everything above is ceiling for top views
    yaw = _yaw(f.xyz[:, :2])
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    uv = f.xyz[:, :2] @ rot
    ulo, uhi = np.percentile(uv, [0.5, 99.5], axis=0)
    top_c = rot @ ((ulo + uhi) / 2)
    cams = [(_nadir(top_c, (uhi - ulo) / 2, hi[2], w, h, 60.0, margin=1.05, near_cut=cut, yaw=yaw), "scene")]
    inset = 0.08 * f.ext[:2]
    for sx in (0, 1):
        for sy in (0, 1):
            eye = np.array([lo[0] + inset[0] if sx == 0 else hi[0] - inset[0],
                            lo[1] + inset[1] if sy == 0 else hi[1] - inset[1], lo[2] + 0.85 * H])
            eye[2] = min(eye[2], cut)
            target = np.array([c[0], c[1], lo[2] + 0.15 * H])
            cams.append((_cam(eye, target, w, h, 80.0, near=0.1), "scene"))
    # a person walking the room: a 3x3 grid of eye points, eight directions each, looking down
    for gx in (0.2, 0.5, 0.8):
        for gy in (0.2, 0.5, 0.8):
            eye = np.array([lo[0] + gx * f.ext[0], lo[1] + gy * f.ext[1], lo[2] + 0.6 * H])
            for a in np.radians(np.arange(0, 360, 45)):
                target = eye + np.array([np.cos(a), np.sin(a), -0.6])
                cams.append((_cam(eye, target, w, h, 70.0, near=0.3), "mid"))
    # 3x3 closer top views
    for qx in (1 / 6, 0.5, 5 / 6):
        for qy in (1 / 6, 0.5, 5 / 6):
            cxy = lo[:2] + np.array([qx, qy]) * f.ext[:2]
            cams.append((_nadir(cxy, f.ext[:2] / 6, hi[2], w, h, 60.0, near_cut=cut), "close"))
    return cams


def _obliques(center, half, z_top, w, h, hfov, pitch_deg=45.0):
    """Four views from N/E/S/W pitched down at pitch_deg, each framing the box."""
    r = max(half[0], half[1])
    d = _fit_distance(r, r, w, h, hfov) * 1.2
    out = []
    p = np.radians(pitch_deg)
    target = np.array([center[0], center[1], center[2]])
    for a in np.radians([0, 90, 180, 270]):
        eye = target + d * np.array([np.cos(a) * np.cos(p), np.sin(a) * np.cos(p), np.sin(p)])
        eye[2] = max(eye[2], z_top + 0.1 * d)
        out.append(_cam(eye, target, w, h, hfov))
    return out


@planner("aerial")
def plan_aerial(f: _Frame, w: int, h: int) -> list[tuple[Camera, str]]:
    """Nadir + four obliques over the whole tile, then over a 2x2 and a 4x4 tiling of the ground."""
    lo, hi = f.lo, f.hi
    ground = np.percentile(f.xyz[:, 2], 5) if len(f.xyz) else lo[2]
    cams: list[tuple[Camera, str]] = []
    # finer tilings only where there are enough points for them to show more than the coarser ones
    levels = [(n, g) for n, g in ((1, "scene"), (2, "mid"), (4, "close")) if n <= 2 or len(f.xyz) >= 2500 * n * n]
    for n_tiles, gran in levels:
        size = f.ext[:2] / n_tiles
        for i in range(n_tiles):
            for j in range(n_tiles):
                cxy = lo[:2] + (np.array([i, j]) + 0.5) * size
                sel = f.xyz[(np.abs(f.xyz[:, 0] - cxy[0]) <= size[0] / 2) & (np.abs(f.xyz[:, 1] - cxy[1]) <= size[1] / 2)]
                if n_tiles > 1 and len(sel) < 20:
                    continue
                top = np.percentile(sel[:, 2], 99) if len(sel) else hi[2]
                if n_tiles == 1:  # the whole tile, framed along its own main axes
                    yaw = _yaw(f.xyz[:, :2])
                    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
                    ulo, uhi = np.percentile(f.xyz[:, :2] @ rot, [0.5, 99.5], axis=0)
                    cams.append((_nadir(rot @ ((ulo + uhi) / 2), (uhi - ulo) / 2, top, w, h, 60.0, yaw=yaw), gran))
                else:
                    cams.append((_nadir(cxy, size / 2, top, w, h, 60.0), gran))
                center = np.array([cxy[0], cxy[1], ground])
                cams += [(cam, gran) for cam in _obliques(center, size / 2, top, w, h, 60.0)]
    return cams


@planner("street")
def plan_street(f: _Frame, w: int, h: int) -> list[tuple[Camera, str]]:
    """Vehicle LiDAR: a street-level panorama from the scanner, the same from points along the
    road, and elevated obliques over the whole scan."""
    s = f.sensor.copy()
    ground = np.percentile(f.xyz[:, 2], 5) if len(f.xyz) else s[2] - 1.7
    cams: list[tuple[Camera, str]] = []
    for a in np.radians(np.arange(0, 360, 45)):
        target = s + np.array([np.cos(a), np.sin(a), -0.18])
        cams.append((_cam(s, target, w, h, 70.0, near=0.5), "mid"))
    # main horizontal direction of the scan (the road) from the PCA of the xy spread
    xy = f.xyz[:, :2] - s[:2]
    near_pts = xy[np.linalg.norm(xy, axis=1) < 40]
    axis = np.array([1.0, 0.0])
    if len(near_pts) > 10:
        _, vec = np.linalg.eigh(np.cov(near_pts.T))
        axis = vec[:, -1]
    for k, t in enumerate((-30.0, -20.0, -10.0, 10.0, 20.0, 30.0)):
        eye = s.copy(); eye[:2] += t * axis
        eye[2] = ground + 1.8
        for a in np.radians(np.arange(0, 360, 90) + 45.0 * (k % 2)):
            target = eye + np.array([np.cos(a), np.sin(a), -0.18])
            cams.append((_cam(eye, target, w, h, 80.0, near=0.5), "close"))
    center = np.array([s[0], s[1], ground])
    cams += [(cam, "scene") for cam in _obliques(center, f.ext[:2] / 3, ground + 5, w, h, 70.0, pitch_deg=35)]
    cams += [(cam, "mid") for cam in _obliques(center, f.ext[:2] / 6, ground + 3, w, h, 70.0, pitch_deg=25)]
    cams.append((_nadir(s[:2], f.ext[:2] / 2, f.hi[2], w, h, 60.0), "scene"))
    return cams


@planner("object")
def plan_object(f: _Frame, w: int, h: int) -> list[tuple[Camera, str]]:
    """An orbit: eight azimuths at two elevations, plus top and bottom."""
    r = float(np.linalg.norm(f.ext) / 2)
    d = _fit_distance(r, r, w, h, 50.0) * 1.05
    cams: list[tuple[Camera, str]] = []
    for el, gran in ((20.0, "scene"), (55.0, "scene"), (-30.0, "mid")):
        e = np.radians(el)
        for a in np.radians(np.arange(0, 360, 45) + (22.5 if el > 30 else 0)):
            eye = f.center + d * np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
            cams.append((_cam(eye, f.center, w, h, 50.0), gran))
    for sgn in (1, -1):
        eye = f.center + np.array([0, 0, sgn * d])
        cams.append((_cam(eye, f.center, w, h, 50.0, up=(0, 1, 0)), "mid"))
    return cams


# --- greedy ordering and repair ---------------------------------------------------------------

def _orient(normal: np.ndarray, point: np.ndarray, kind: str, f: _Frame) -> np.ndarray:
    """Point a normal to the side a camera should look from."""
    if kind == "street":
        toward = f.sensor - point
    elif kind == "aerial":
        toward = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) > 0.3 else f.center - point
        toward = toward if abs(normal[2]) > 0.3 else np.array([toward[0], toward[1], 0.0]) * 0 + (f.center - point)
    elif kind == "indoor":
        toward = np.array([f.center[0], f.center[1], f.lo[2] + 0.6 * f.ext[2]]) - point
    else:
        toward = point - f.center
    return normal if np.dot(normal, toward) >= 0 else -normal


def _repair(scene, f: _Frame, kind: str, seen: np.ndarray, target: float, budget: int, w: int, h: int,
            chosen: list, vis_cache: list) -> None:
    xyz = f_all = _points(scene)
    normals = point_normals(xyz)
    hopeless = np.zeros(len(xyz), bool)
    diag = float(np.linalg.norm(f.ext))
    cell = diag / 8
    spacing = splat_radius(scene.to_point_cloud() if isinstance(scene, Mesh) else scene) / SPLAT_SCALE
    tries = 0
    while seen.mean() < target and len(chosen) < budget and tries < 4 * MAX_REPAIR_VIEWS:
        tries += 1
        todo = np.flatnonzero(~seen & ~hopeless & np.isfinite(f_all).all(1))
        if not len(todo):
            break
        coords, inverse, _, counts = native.voxelize(xyz[todo], cell)
        best = int(np.argmax(counts))
        members = todo[inverse == best]
        if counts[best] < 3 and cell > 4 * float(np.median(spacing[todo])):
            cell /= 2  # only scattered points left: look closer
            continue
        centroid = xyz[members].mean(0)
        t_id = members[np.argmin(np.linalg.norm(xyz[members] - centroid, axis=1))]
        tgt = xyz[t_id].astype(np.float64)
        n = normals[members].astype(np.float64).mean(0)
        if np.linalg.norm(n) < 0.3:
            n = normals[t_id].astype(np.float64)
        n = _orient(n / max(np.linalg.norm(n), 1e-9), tgt, kind, f)
        ext = np.ptp(xyz[members], axis=0).max() if len(members) > 1 else cell
        dist = max(_fit_distance(ext / 2, ext / 2, w, h, 60.0) * 1.3, 20 * float(spacing[t_id]), 0.3)
        # cut away everything in front of the cluster: a clipping plane just before it
        near = max(dist - 0.5 * ext - 3 * float(spacing[t_id]), 0.05 * dist)
        best_gain, best_cam, best_ids = 0, None, None
        # the normal and up first; then level views from the four sides (under tables and desks,
        # where neither the normal of a scattered cluster nor the ceiling sees)
        side = [np.array([np.cos(a), np.sin(a), 0.15]) for a in np.radians([0, 90, 180, 270])]
        for dirn in (n, np.array([0, 0, 1.0]), (n + np.array([0, 0, 1.0])) / 2, -n, *side):
            if np.linalg.norm(dirn) < 1e-6:
                continue
            dirn = dirn / np.linalg.norm(dirn)
            eye = tgt + dirn * dist
            cam = _cam(eye, tgt, w, h, 60.0, near=near)
            # candidates are compared at half resolution; the chosen one is rendered at full below
            ids = visible_points(scene, cam.scaled(max(1, w // 2), max(1, h // 2)))
            gain = int((~seen[ids]).sum())
            if gain > best_gain:
                best_gain, best_cam, best_ids = gain, cam, ids
            if gain >= 0.6 * len(members):
                break
        if best_cam is not None:
            best_ids = visible_points(scene, best_cam)
        if best_cam is None or not np.isin(members, best_ids).any():
            hopeless[members] = True
            if best_cam is None:
                continue
        if best_gain < 0.3 * len(members) and cell > 4 * float(np.median(spacing[todo])):
            cell /= 2  # the cluster was too big to see at once: look closer next time
        chosen.append((best_cam, "close"))
        vis_cache.append(best_ids)
        seen[best_ids] = True


def plan_cameras(scene: PointCloud | Mesh, *, kind: str = "auto", max_views: int | None = None, width: int = 640,
                 height: int = 480, target: float = TARGET_COVERAGE, min_views: int = MIN_VIEWS_PER_POINT,
                 progress: bool = True) -> list[tuple[Camera, str]]:
    """Cameras (with granularity "scene" | "mid" | "close") that together see >= ``target`` of the
    points. ``kind``: "indoor" | "aerial" | "street" | "object" | "auto" (see detect_kind).

    Whole-scene views come first; the rest are ordered by how many points each brings closer to
    ``min_views`` observations. One view per point is coverage; fusion needs a few per point to
    outvote a wrong 2D mask (docs/fusion.md), so proposals that only add redundancy are kept too.
    ``min_views=1`` plans for coverage alone (fewest views, fastest 2D stage)."""
    kind = detect_kind(scene) if kind == "auto" else kind
    if kind not in PLANNERS:
        raise ValueError(f"unknown scene kind {kind!r}; choose from {sorted(PLANNERS)} or 'auto'")
    xyz = _points(scene)
    f = _Frame(xyz, scene.origin)
    proposals = PLANNERS[kind](f, width, height)
    from .frames import _progress
    vis = [visible_points(scene, c) for c, _ in _progress(proposals, len(proposals), progress, f"plan ({kind})")]
    budget = max_views if max_views is not None else len(proposals) + MAX_REPAIR_VIEWS
    count = np.zeros(len(xyz), np.int32)
    chosen: list[tuple[Camera, str]] = []
    vis_cache: list[np.ndarray] = []

    def take(i: int) -> None:
        chosen.append(proposals[i]); vis_cache.append(vis[i]); count[vis[i]] += 1

    order = [i for i, (_, g) in enumerate(proposals) if g == "scene"]
    rest = [i for i, (_, g) in enumerate(proposals) if g != "scene"]
    for i in order[:budget]:
        take(i)
    min_gain = max(1, int(1e-4 * len(xyz)))
    need = max(int(min_views), 1)
    while rest and len(chosen) < budget:
        # a first observation counts most, then each one up to ``need``
        gains = [int(((count[vis[i]] == 0) * need + (count[vis[i]] < need)).sum()) for i in rest]
        k = int(np.argmax(gains))
        if gains[k] < min_gain * need:
            break
        take(rest.pop(k))
    seen = count > 0
    # every plan has closer views too (2D models see small things better up close), even when
    # the whole-scene views already reach the target
    closer = [i for i in rest if len(vis[i])]
    closer.sort(key=lambda i: -len(vis[i]))
    while sum(g != "scene" for _, g in chosen) < MIN_CLOSER_VIEWS and closer and len(chosen) < budget:
        i = closer.pop(0)
        take(i)
        seen[vis[i]] = True
    if seen.mean() < target and len(chosen) < budget and len(xyz):
        _repair(scene, f, kind, seen, target, budget, width, height, chosen, vis_cache)
    return chosen
