"""OBJ / GLB / GLTF / OFF / STL meshes through trimesh (PLY meshes use pc_ovseg's own parser).

Multi-part scenes (GLB) are concatenated in world space (trimesh packs their textures into one
atlas). Vertex colours are kept when the file has them; a textured mesh keeps its UVs and its
base-colour texture (times the material's colour factor), and its vertex colours are the
texture sampled at each vertex.
"""
from __future__ import annotations

import numpy as np

from ..data import Mesh
from ..errors import InputError
from ._common import check_file, exc_text, make_cloud, register


def read_trimesh(path: str, layout=None) -> Mesh:
    import trimesh
    path = check_file(path)
    try:
        obj = trimesh.load(path, process=False, force=None)
    except Exception as exc:  # trimesh raises many kinds for broken files
        raise InputError(path, f"malformed mesh ({exc_text(exc)})") from None
    if isinstance(obj, trimesh.Scene):
        geoms = [g for g in obj.dump() if isinstance(g, trimesh.Trimesh)] if obj.geometry else []
        if not geoms:
            raise InputError(path, "mesh file holds no triangle geometry")
        obj = trimesh.util.concatenate(geoms) if len(geoms) > 1 else geoms[0]
    if not isinstance(obj, trimesh.Trimesh):
        raise InputError(path, f"expected a triangle mesh, got {type(obj).__name__}")
    v = np.asarray(obj.vertices, np.float64)
    f = np.asarray(obj.faces, np.int64).reshape(-1, 3)
    rgb = None
    vc = getattr(obj.visual, "vertex_colors", None) if obj.visual.kind == "vertex" else None
    if vc is not None and len(vc) == len(v):
        rgb = np.asarray(vc)[:, :3]
    uv, texture = _texture(obj, len(v))
    cloud = make_cloud(path, v, rgb=rgb)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise InputError(path, "face indices out of range")
    mesh = Mesh(cloud.xyz, f, cloud.rgb, {}, cloud.origin, source=path, uv=uv, texture=texture)
    if texture is not None:
        mesh.vertex_rgb = np.clip(mesh.sample_texture(uv) + 0.5, 0, 255).astype(np.uint8)
    return mesh


def _texture(obj, n_vertices: int):
    """(uv, texture) of a textured trimesh, or (None, None)."""
    vis = obj.visual
    if vis.kind != "texture" or getattr(vis, "uv", None) is None or len(vis.uv) != n_vertices:
        return None, None
    mat = vis.material
    img = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
    if img is None:
        return None, None
    tex = np.asarray(img.convert("RGB"), np.float32)
    factor = getattr(mat, "baseColorFactor", None)  # glTF: texture x factor (RGBA, 0-255 in trimesh)
    if factor is not None:
        tex *= np.asarray(factor, np.float32)[:3] / 255.0
    return np.asarray(vis.uv, np.float32), np.clip(tex + 0.5, 0, 255).astype(np.uint8)


register("trimesh", "mesh", exts=(".obj", ".glb", ".gltf", ".off", ".stl"))(read_trimesh)


def read_e57(path: str, layout=None):
    """E57 scans via pye57 (optional extra ``pc_ovseg[e57]``): all scans merged, in world frame."""
    path = check_file(path)
    try:
        import pye57
    except ImportError:
        raise InputError(path, "E57 needs the optional pye57 package (pip install pc_ovseg[e57])") from None
    try:
        e = pye57.E57(path)
        parts = [e.read_scan(i, colors=True, intensity=True, ignore_missing_fields=True, transform=True)
                 for i in range(e.scan_count)]
    except Exception as exc:
        raise InputError(path, f"malformed E57 ({exc_text(exc)})") from None
    if not parts:
        raise InputError(path, "E57 holds no scans")
    cat = lambda k: np.concatenate([np.asarray(p[k]) for p in parts])  # noqa: E731
    xyz = np.stack([cat("cartesianX"), cat("cartesianY"), cat("cartesianZ")], 1).astype(np.float64)
    rgb = None
    if all("colorRed" in p for p in parts):
        rgb = np.stack([cat("colorRed"), cat("colorGreen"), cat("colorBlue")], 1)
    fields = {"intensity": cat("intensity")} if all("intensity" in p for p in parts) else {}
    return make_cloud(path, xyz, rgb=rgb, fields=fields)


register("e57", "cloud", exts=(".e57",))(read_e57)
