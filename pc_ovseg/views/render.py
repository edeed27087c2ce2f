"""Render bare clouds and meshes into Views: splat z-buffer for points, ray casting for meshes.

Every render yields colour, depth and the id of the point (or face) seen at each pixel, and
the View's ``point_ids``/``pixels`` are the points passing a depth test against the rendered
depth map, exactly as for posed RGB-D frames.
"""
from __future__ import annotations

import numpy as np

from .. import native
from ..registry import Registry
from ..data import Camera, Mesh, PointCloud, View
from .cameras import camera_near
from ..geometry import point_normals, point_spacing

BACKGROUND = np.array([255, 255, 255], np.uint8)
SPLAT_SCALE = 0.75          # disc radius = SPLAT_SCALE * local spacing: neighbouring discs overlap
MIN_RGB_STD = 12.0          # below this colour spread (0-255) a cloud's rgb is treated as uninformative
MAX_SPLAT_PX = 16.0         # disc radius cap in pixels (close-ups of sparse clouds; cost grows with its square)
VIS_TOL_SPACING = 2.5       # depth-test slack for rendered views, in local spacings (OpenScene: 25 % of depth)


def splat_radius(cloud: PointCloud, splat: str | float = "auto") -> np.ndarray | None:
    """World-space disc radius per point: from kNN spacing ("auto"), a number, or None ("point")."""
    if splat == "point" or splat is None:
        return None
    if splat == "auto":
        return SPLAT_SCALE * point_spacing(cloud.xyz)
    return np.full(len(cloud), float(splat), np.float32)


# --- colouring ------------------------------------------------------------------------------

def _ramp(t: np.ndarray) -> np.ndarray:
    """A perceptual-ish blue-green-yellow-red ramp for heights/values in [0, 1] -> (N, 3) float."""
    t = np.clip(np.nan_to_num(t), 0, 1)[:, None]
    stops = np.array([[0.19, 0.25, 0.62], [0.13, 0.60, 0.72], [0.40, 0.76, 0.36], [0.96, 0.83, 0.25],
                      [0.84, 0.30, 0.20]])
    x = t[:, 0] * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def _label_colors(values: np.ndarray) -> np.ndarray:
    """Stable distinct colours for integer ids (labels, instances); -1/0 stay grey."""
    v = values.astype(np.int64)
    h = (v * 0.618033988749895) % 1.0
    rgb = np.stack([np.abs(h * 6 - 3) - 1, 2 - np.abs(h * 6 - 2), 2 - np.abs(h * 6 - 4)], 1)
    rgb = np.clip(rgb, 0, 1) * 0.75 + 0.2
    rgb[v <= 0] = 0.6
    return (rgb * 255).astype(np.uint8)


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros_like(v)
    lo, hi = np.percentile(v[ok], [2, 98])
    return (v - lo) / max(hi - lo, 1e-9)


def _shade(normals: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Headlight Lambert term in [0.35, 1] so surfaces facing the camera are bright."""
    cos = np.abs(np.einsum("ij,ij->i", normals, rays))
    return 0.35 + 0.65 * cos


#: shading name -> fn(cloud, ids, rays, depth) -> per-pixel intensity; extend with @SHADERS.register.
SHADERS = Registry()
shader = SHADERS.register


@shader("rgb")
def _shade_rgb(cloud, ids, rays, z_world):
    return cloud.rgb[ids].astype(np.float32)


@shader("intensity")
def _shade_intensity(cloud, ids, rays, z_world):
    key = _intensity_key(cloud)
    if key is None:
        raise ValueError("shading='intensity' needs an intensity field")
    v = _normalise(np.asarray(cloud.fields[key], np.float64).reshape(len(cloud), -1)[:, 0])[ids]
    g = 0.15 + 0.85 * np.clip(v, 0, 1) ** 0.7
    s = _shade(point_normals(cloud.xyz)[ids], rays)
    return (np.repeat((g * s)[:, None], 3, 1) * 255).astype(np.float32)


def _intensity_key(cloud) -> str | None:
    for k in ("intensity", "Intensity", "remission"):
        if k in cloud.fields and np.ptp(np.asarray(cloud.fields[k], np.float64)) > 0:
            return k
    return None


@shader("height")
def _shade_height(cloud, ids, rays, z_world):
    """Height ramp x headlight, darkened by intensity where the cloud has one (LiDAR)."""
    lo, hi = np.percentile(cloud.xyz[:, 2], [1, 99]) if len(cloud) else (0, 1)
    col = _ramp((cloud.xyz[ids, 2] - lo) / max(hi - lo, 1e-6))
    s = _shade(point_normals(cloud.xyz)[ids], rays)
    key = _intensity_key(cloud)
    if key is not None:
        v = _normalise(np.asarray(cloud.fields[key], np.float64).reshape(len(cloud), -1)[:, 0])[ids]
        s = s * (0.7 + 0.3 * np.clip(v, 0, 1))
    return (col * s[:, None] * 255).astype(np.float32)


@shader("normals")
def _shade_normals(cloud, ids, rays, z_world):
    n = point_normals(cloud.xyz)[ids]
    n = np.where((np.einsum("ij,ij->i", n, rays) > 0)[:, None], -n, n)  # face the camera
    return ((n * 0.5 + 0.5) * 255 * _shade(n, rays)[:, None]).astype(np.float32)


def pick_shading(cloud: PointCloud, shading: str = "auto") -> str:
    """rgb when the cloud has informative colour, else height (modulated by intensity if any).

    Nearly uniform colour (some LAS tiles carry one grey for every point) shows no shape at all,
    so it is treated as no colour; raw LiDAR intensity alone is too speckled to read shapes from.
    """
    if shading != "auto":
        if shading not in SHADERS:
            raise ValueError(f"unknown shading {shading!r}; choose from {sorted(SHADERS)} or 'auto'")
        if shading == "rgb" and cloud.rgb is None:
            raise ValueError("shading='rgb' needs a cloud with colour")
        return shading
    if cloud.rgb is not None and float(cloud.rgb.astype(np.float32).std(0).max()) >= MIN_RGB_STD:
        return "rgb"
    return "height"


def _attribute_image(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim == 2 and v.shape[1] == 3 and v.dtype == np.uint8:
        return v[ids].astype(np.float32)
    v = v.reshape(len(v), -1)[:, 0]
    if np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.bool_):
        return _label_colors(v[ids]).astype(np.float32)
    return (_ramp(_normalise(v)[ids]) * 255).astype(np.float32)


def attribute_map(index: np.ndarray, values: np.ndarray, fill=-1) -> np.ndarray:
    """Per-pixel values of a per-point field by the index map (nearest-point splatting)."""
    values = np.asarray(values)
    out = np.full(index.shape + values.shape[1:], fill, dtype=values.dtype)
    m = index >= 0
    out[m] = values[index[m]]
    return out


# --- point clouds ---------------------------------------------------------------------------

def _pixel_rays(camera: Camera, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    K = camera.K
    d = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones(len(rows))], 1)
    d = d @ camera.cam_to_world[:3, :3].T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def render_cloud(cloud: PointCloud, camera: Camera, *, granularity: str = "scene", attribute: str | None = None,
                 splat: str | float = "auto", fill_holes: bool = True, shading: str = "auto",
                 rel_tol: float = 0.01, abs_tol: float = 0.02, name: str = "") -> View:
    if attribute is not None and attribute not in cloud.fields:
        raise KeyError(f"no per-point field {attribute!r}; the cloud has {sorted(cloud.fields)}")
    radius = splat_radius(cloud, splat)
    near = camera_near(camera)
    depth, index = native.splat(cloud.xyz, camera, radius=radius, near=near, max_pixel_radius=MAX_SPLAT_PX,
                                fill_iters=2 if fill_holes else 0)
    H, W = depth.shape
    hit = index >= 0
    ids = index[hit]
    mode = None if attribute is not None else pick_shading(cloud, shading)
    if mode == "rgb":  # the common case: a straight uint8 gather, no float image
        rgb = np.empty((H, W, 3), np.uint8)
        rgb[:] = BACKGROUND
        rgb[hit] = cloud.rgb[ids]
    else:
        img = np.empty((H, W, 3), np.float32)
        img[:] = BACKGROUND
        if len(ids):
            if attribute is not None:
                img[hit] = _attribute_image(cloud.fields[attribute], ids)
            else:
                rows, cols = np.nonzero(hit)
                img[hit] = SHADERS[mode](cloud, ids, _pixel_rays(camera, rows, cols), depth[hit])
        rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    tol = None if radius is None else VIS_TOL_SPACING / SPLAT_SCALE * radius
    pids, pix, _ = native.depth_test(cloud.xyz, camera, depth, rel_tol=rel_tol, abs_tol=abs_tol, point_tol=tol,
                                     near=near)
    return View(camera, rgb, depth, index, pids, pix, name=name, granularity=granularity,
                meta={"kind": "points", "attribute": attribute, "shading": mode})


# --- meshes ---------------------------------------------------------------------------------

def _cast_open3d(mesh: Mesh, origins: np.ndarray, dirs: np.ndarray):
    import open3d as o3d  # optional; faster than embree through trimesh and needs no trimesh
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    rays = np.concatenate([origins, dirs], 1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t = ans["t_hit"].numpy()
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    ok = np.isfinite(t)
    prim[~ok] = -1
    return np.flatnonzero(ok), prim[ok], origins[ok] + dirs[ok] * t[ok, None]


def _cast_trimesh(mesh: Mesh, origins: np.ndarray, dirs: np.ndarray):
    import trimesh
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
        caster = RayMeshIntersector(tm)
    except Exception:  # embreex missing: trimesh's pure-numpy caster (slow but correct)
        caster = tm.ray
    tri, ray, loc = caster.intersects_id(origins, dirs, multiple_hits=False, return_locations=True)
    return ray, tri.astype(np.int64), loc


def _raycaster():
    try:
        import open3d  # noqa: F401
        return _cast_open3d
    except ImportError:
        return _cast_trimesh


def render_mesh(mesh: Mesh, camera: Camera, *, granularity: str = "scene", attribute: str | None = None,
                shading: str = "auto", rel_tol: float = 0.01, abs_tol: float = 0.02, name: str = "") -> View:
    W, H = camera.width, camera.height
    rr, cc = np.mgrid[0:H, 0:W]
    rows, cols = rr.ravel().astype(np.float64), cc.ravel().astype(np.float64)
    dirs = _pixel_rays(camera, rows, cols)
    origins = np.broadcast_to(camera.center, dirs.shape).astype(np.float64)
    near = camera_near(camera)
    ray, face, loc = _raycaster()(mesh, origins + dirs * near, dirs)
    zaxis = camera.cam_to_world[:3, 2]
    z = (loc - camera.center) @ zaxis
    depth = np.zeros(H * W, np.float32); depth[ray] = z
    index = np.full(H * W, -1, np.int64); index[ray] = face
    tri = mesh.vertices[mesh.faces[face]].astype(np.float64)            # (M, 3, 3)
    bary = _barycentric(tri, loc)
    rgb = np.empty((H * W, 3), np.float32); rgb[:] = BACKGROUND
    if attribute is not None:
        if attribute not in mesh.fields:
            raise KeyError(f"no per-vertex field {attribute!r}; the mesh has {sorted(mesh.fields)}")
        nearest = mesh.faces[face, np.argmax(bary, 1)]
        rgb[ray] = _attribute_image(mesh.fields[attribute], nearest)
    elif mesh.texture is not None and shading in ("auto", "rgb"):  # photo detail between vertices
        rgb[ray] = mesh.sample_texture(np.einsum("mk,mkc->mc", bary, mesh.uv[mesh.faces[face]].astype(np.float64)))
    elif mesh.vertex_rgb is not None and shading in ("auto", "rgb"):
        rgb[ray] = np.einsum("mk,mkc->mc", bary, mesh.vertex_rgb[mesh.faces[face]].astype(np.float32))
    else:
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        zs = mesh.vertices[:, 2]
        lo, hi = (np.percentile(zs, [1, 99]) if len(zs) else (0, 1))
        rgb[ray] = _ramp((loc[:, 2] - lo) / max(hi - lo, 1e-6)) * _shade(n, dirs[ray])[:, None] * 255
    depth, index = depth.reshape(H, W), index.reshape(H, W)
    pids, pix, _ = native.depth_test(mesh.vertices, camera, depth, rel_tol=rel_tol, abs_tol=abs_tol, near=near)
    return View(camera, np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(H, W, 3), depth, index, pids, pix,
                name=name, granularity=granularity, meta={"kind": "mesh", "attribute": attribute})


def _barycentric(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00 = np.einsum("ij,ij->i", v0, v0); d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1); d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) > 1e-20, den, 1e-20)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    return np.clip(np.stack([1 - v - w, v, w], 1), 0, 1)


def render_view(scene: PointCloud | Mesh, camera: Camera, *, granularity: str = "scene", attribute: str | None = None,
                splat: str | float = "auto", fill_holes: bool = True, shading: str = "auto",
                rel_tol: float = 0.01, abs_tol: float = 0.02, name: str = "") -> View:
    """Render ``scene`` from ``camera``: colour (or a per-point ``attribute``), depth, index map.

    Point clouds: discs sized from local spacing (``splat="auto"``, a world radius, or
    ``"point"`` for 1-pixel points), then hole filling. Meshes: ray casting, index = face id,
    visible ids = vertices. ``point_ids`` are the points within max(abs_tol, rel_tol * d, 2
    local spacings) of the rendered depth.
    """
    if isinstance(scene, Mesh):
        return render_mesh(scene, camera, granularity=granularity, attribute=attribute, shading=shading,
                           rel_tol=rel_tol, abs_tol=abs_tol, name=name)
    if isinstance(scene, PointCloud):
        return render_cloud(scene, camera, granularity=granularity, attribute=attribute, splat=splat,
                            fill_holes=fill_holes, shading=shading, rel_tol=rel_tol, abs_tol=abs_tol, name=name)
    raise TypeError(f"render_view needs a PointCloud or Mesh, got {type(scene).__name__}")
