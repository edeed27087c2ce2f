"""Which way is up in a cloud, so the viewer orbits around the data's vertical, not always z.

Clouds made from RGB-D frames live in their first camera's frame (7-Scenes: y down, tilted by
that camera's pitch); LAS, ScanNet and LiDAR scans are z-up. ``detect_up`` asks the camera
poses when the cloud's source frames can be read, else the geometry.
"""
from __future__ import annotations

import os

import numpy as np

AXES = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1), "-x": (-1, 0, 0), "-y": (0, -1, 0), "-z": (0, 0, -1)}
SNAP_DEG = 5.0        # a detected up this close to an axis is that axis (axis-aligned data)
PLANE_DEG = 10.0      # normals this close count as one plane direction


def up_vector(name: str) -> np.ndarray:
    """``x``, ``-y``, ... as a unit vector."""
    return np.array(AXES[name], np.float64)


def up_from_cameras(cam_to_world: np.ndarray) -> np.ndarray:
    """Up from (F, 4, 4) OpenCV camera poses: a hand-held or mounted camera hardly rolls, so its
    x axis stays horizontal and up is the normal of the plane the x axes span. Its sign (and the
    answer when the x axes barely turn) comes from the mean camera up, -y."""
    R = np.asarray(cam_to_world, np.float64)[:, :3, :3]
    mean_up = -R[:, :, 1].mean(0)
    x = R[:, :, 0]
    w, v = np.linalg.eigh(x.T @ x)
    if w[0] < 0.25 * w[1]:
        up = v[:, 0]
    else:  # one x direction: the mean camera up, less its part along it
        up = mean_up - (mean_up @ v[:, 2]) * v[:, 2]
    up = up * (1.0 if up @ mean_up >= 0 else -1.0)
    return _snap(up / np.linalg.norm(up))


def up_from_geometry(xyz: np.ndarray, normals: np.ndarray | None = None, *, seed: int = 0) -> np.ndarray | None:
    """Up from the shape alone, or None when it has too few planar points to tell.

    The direction most planar normals share (floor, table tops, ground, roofs) is the vertical:
    a room's walls split theirs between two directions. z wins near-ties (within 25 %), since
    z-up is what scanners, LAS and ScanNet write. Its sign: +z for a z-ish up; otherwise the
    side of those planes where the other points are (things stand on a floor; nothing is under
    it), and y down (the camera convention) when that does not decide.
    """
    xyz = np.asarray(xyz)
    finite = np.isfinite(xyz).all(1)
    if normals is not None:
        finite &= np.isfinite(normals).all(1)
    pts = xyz[finite].astype(np.float64)
    if len(pts) < 50:
        return None
    rng = np.random.default_rng(seed)
    base_ids = rng.choice(len(pts), min(len(pts), 100_000), replace=False)
    base = pts[base_ids]
    q = rng.choice(len(base), min(len(base), 10_000), replace=False)
    if normals is not None:
        n = np.asarray(normals, np.float64)[finite][base_ids][q]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        planar = np.ones(len(q), bool)
    else:
        n, planar = _pca_normals(base, q)
    if planar.sum() < 20:
        return None
    cos = np.cos(np.radians(PLANE_DEG))
    pn = n[planar]
    cand = np.concatenate([np.eye(3), pn[rng.choice(len(pn), min(300, len(pn)), replace=False)]])
    score = (np.abs(cand @ pn.T) > cos).sum(1)
    best = int(np.argmax(score))
    if abs(cand[best, 2]) < np.cos(np.radians(SNAP_DEG)) and score[2] >= 0.75 * score[best]:
        best = 2
    members = pn[np.abs(pn @ cand[best]) > cos]
    d = (members * np.sign(members @ cand[best])[:, None]).sum(0)
    d = _snap(d / np.linalg.norm(d))
    if abs(d[2]) >= np.cos(np.radians(30)):
        return d * np.sign(d[2])
    vote = _open_side(base, base[q][planar][np.abs(pn @ d) > cos], d, rng)
    if abs(vote) < 0.1:
        vote = -d[1]
    return d if vote > 0 else -d


def _pca_normals(base: np.ndarray, q: np.ndarray, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Unoriented normals at ``base[q]`` from their k nearest neighbours, and which are planar."""
    from scipy.spatial import cKDTree
    k = min(k, len(base))
    _, nb = cKDTree(base).query(base[q], k, workers=-1)
    p = base[nb] - base[nb].mean(1, keepdims=True)
    w, v = np.linalg.eigh(np.einsum("nki,nkj->nij", p, p))
    return v[:, :, 0], w[:, 0] < 0.05 * w[:, 1]


def _open_side(base: np.ndarray, plane_pts: np.ndarray, d: np.ndarray, rng) -> float:
    """Mean vote in [-1, 1]: +1 where a plane point's neighbourhood lies above it along ``d``."""
    from scipy.spatial import cKDTree
    if not len(plane_pts):
        return 0.0
    plane_pts = plane_pts[rng.permutation(len(plane_pts))[:300]]
    r = 0.05 * np.linalg.norm(np.percentile(base, 99, 0) - np.percentile(base, 1, 0))
    votes = []
    for p, near in zip(plane_pts, cKDTree(base).query_ball_point(plane_pts, r, workers=-1)):
        h = (base[near] - p) @ d
        votes.append(np.sign((h > 0.2 * r).sum() - (h < -0.2 * r).sum()))
    return float(np.mean(votes))


def _snap(up: np.ndarray) -> np.ndarray:
    k = int(np.argmax(np.abs(up)))
    if abs(up[k]) >= np.cos(np.radians(SNAP_DEG)):
        return np.eye(3)[k] * np.sign(up[k])
    return up


def source_cameras(source: str | None) -> np.ndarray | None:
    """(F, 4, 4) poses of the RGB-D frames a cloud was built from (its ``source`` folder or
    manifest), or None when there are none to read."""
    if not source or not (os.path.isdir(source) or source.lower().endswith(".json")):
        return None
    from ..errors import PcOvsegError
    from ..io import read_frames
    try:
        frames = read_frames(source)
    except (PcOvsegError, OSError, ValueError):
        return None
    return np.stack([c.cam_to_world for c in frames.cameras]) if len(frames) else None


def detect_up(cloud) -> tuple[np.ndarray, str]:
    """(unit up vector, what decided it): camera poses, else geometry, else z."""
    poses = source_cameras(cloud.source)
    if poses is not None:
        return up_from_cameras(poses), "camera poses"
    up = up_from_geometry(cloud.xyz, cloud.normals)
    return (up, "geometry") if up is not None else (up_vector("z"), "default")
