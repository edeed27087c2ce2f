"""A city block of any size made from real airborne LiDAR: copies of PDAL's classified
``sample_c.las`` (14,408 points, 83 x 75 m, ground / vegetation / building / wire, RGB) laid on a
grid, each turned by a multiple of 90 degrees, written chunk by chunk as LAS/LAZ with
georeferenced (UTM-sized) coordinates, so no more than one row of copies is ever in memory."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SAMPLE = "las/sample_c.las"
GAP = 2.0      # metres between copies


def write_city(path, shared, n_points: int, *, seed: int = 0) -> dict:
    """``n_points`` (rounded up to whole copies) of real LiDAR as one LAS/LAZ; returns its facts."""
    import laspy
    from pc_ovseg import io
    src = io.read_cloud(Path(shared) / SAMPLE)
    xyz = src.world_xyz
    xyz = xyz - xyz.min(0)
    size = xyz.max(0)[:2]
    side = float(size.max()) + GAP
    copies = math.ceil(n_points / len(src))
    cols = math.ceil(math.sqrt(copies))
    rng = np.random.default_rng(seed)
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales = [0.001, 0.001, 0.001]
    base = np.array([500_000.0, 4_000_000.0, 100.0])
    header.offsets = base
    cls = np.asarray(src.fields["classification"], np.uint8)
    rgb16 = src.rgb.astype(np.uint16) * 257
    centre = size / 2
    written = 0
    with laspy.open(str(path), mode="w", header=header, do_compress=str(path).endswith(".laz")) as w:
        for k in range(copies):
            r, c = divmod(k, cols)
            turn = int(rng.integers(4))
            ang = turn * np.pi / 2
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            p = xyz.copy()
            p[:, :2] = (p[:, :2] - centre) @ rot.T + centre + np.array([c * side, r * side])
            p += base
            rec = laspy.ScaleAwarePointRecord.zeros(len(p), header=header)
            rec.x, rec.y, rec.z = p[:, 0], p[:, 1], p[:, 2]
            rec.classification = cls
            rec.red, rec.green, rec.blue = rgb16[:, 0], rgb16[:, 1], rgb16[:, 2]
            w.write_points(rec)
            written += len(p)
    return {"path": str(path), "points": written, "copies": copies, "extent_m": [cols * side, math.ceil(copies / cols) * side]}
