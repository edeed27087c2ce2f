"""Planner coverage and the renderer on real clouds, meshes by ray casting, and `pc-ovseg render`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pc_ovseg.cli import main
from pc_ovseg.data import Mesh
from pc_ovseg.io import read_cloud
from pc_ovseg.views import attribute_map, coverage, detect_kind, make_camera, plan_cameras, render_view

LAS = ["sample_c.las", "warsaw_small.las", "mvk-thin.las", "autzen_trim.las"]


def _load(shared_data, name):
    if name == "scannet":
        return read_cloud(shared_data / "scannet-scene0000" / "scene0000_00.bin", layout="xyzrgb")
    if name == "kitti":
        return read_cloud(shared_data / "semantickitti" / "points_000000.npy")
    return read_cloud(shared_data / "las" / name)


@pytest.mark.parametrize("name,kind", [("scannet", "indoor"), ("kitti", "street")] + [(n, "aerial") for n in LAS])
def test_default_plan_sees_99_percent(shared_data, name, kind):
    cloud = _load(shared_data, name)
    assert detect_kind(cloud) == kind
    cams = plan_cameras(cloud)
    grans = {g for _, g in cams}
    assert "scene" in grans and len(grans) >= 2          # whole-scene and closer views
    assert coverage(cloud, cams) >= 0.99


def test_max_views_caps_the_plan(shared_data):
    cloud = _load(shared_data, "kitti")
    cams = plan_cameras(cloud, max_views=5)
    assert len(cams) == 5
    assert 0.5 < coverage(cloud, cams) < 1.0


def test_render_is_solid_and_consistent(shared_data):
    cloud = _load(shared_data, "scannet")
    cam = make_camera([1.0, 1.0, 2.2], [5.0, 6.0, 0.5])
    v = render_view(cloud, cam)
    hit = v.index >= 0
    assert hit.mean() > 0.9                                # surfaces look solid
    np.testing.assert_array_equal(v.rgb[hit], cloud.rgb[v.index[hit]])
    assert (v.depth[hit] > 0).all() and (v.depth[~hit] == 0).all()
    # visible points lie on the rendered surface at their own pixel
    _, z = cam.project(cloud.xyz[v.point_ids])
    d = v.depth[v.pixels[:, 0], v.pixels[:, 1]]
    assert np.median(np.abs(d - z) / z) < 0.01
    assert np.isin(v.index[hit], v.point_ids).mean() > 0.8  # pixels mostly show points counted visible
    holes = render_view(cloud, cam, splat="point", fill_holes=False)
    assert (holes.index >= 0).mean() < 0.5                 # what splatting + filling fixes


def test_attribute_render_uses_nearest_point(shared_data):
    cloud = _load(shared_data, "kitti")
    assert "label" in cloud.fields
    cam, _ = plan_cameras(cloud, max_views=1)[0]
    v = render_view(cloud, cam, attribute="label")
    labels = attribute_map(v.index, cloud.fields["label"].reshape(-1))
    hit = v.index >= 0
    assert len(np.unique(labels[hit])) >= 5
    # one colour per label id
    cols = {}
    for lab, col in zip(labels[hit][::50], v.rgb[hit][::50]):
        cols.setdefault(int(lab), set()).add(tuple(col))
    assert all(len(c) == 1 for c in cols.values())
    with pytest.raises(KeyError):
        render_view(cloud, cam, attribute="nope")


def test_colourless_clouds_are_shaded(shared_data):
    cloud = _load(shared_data, "mvk-thin.las")
    assert cloud.rgb is None
    cam, _ = plan_cameras(cloud, max_views=1)[0]
    v = render_view(cloud, cam)
    assert v.rgb[v.index >= 0].std() > 10


def test_mesh_ray_casting():
    import trimesh
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    mesh = Mesh(box.vertices, box.faces, vertex_rgb=np.tile([[200, 30, 30]], (len(box.vertices), 1)),
                fields={"part": np.arange(len(box.vertices))})
    cam = make_camera([0, 0, 3.0], [0, 0, 0], width=160, height=120, up=(0, 1, 0))
    v = render_view(mesh, cam)
    hit = v.index >= 0
    assert 0.05 < hit.mean() < 0.9
    np.testing.assert_allclose(v.depth[hit], 2.5, atol=1e-4)          # top face 0.5 m above centre
    up_faces = np.flatnonzero(box.face_normals[:, 2] > 0.9)
    assert set(np.unique(v.index[hit])) <= set(up_faces.tolist())
    assert (v.rgb[hit] == [200, 30, 30]).all()
    top = np.flatnonzero(box.vertices[:, 2] > 0)
    assert set(v.point_ids.tolist()) == set(top.tolist())             # the 4 top corners
    cams = plan_cameras(mesh, kind="object", width=160, height=120)
    assert coverage(mesh, cams) == 1.0


def test_textured_glb_is_rendered_from_its_texture(tmp_path):
    """A 4-vertex quad with a red/blue/red/blue striped texture: vertex colours alone would give a
    red-to-blue gradient; the render shows the stripes, and the vertices get the texture colour."""
    import trimesh
    from PIL import Image

    from pc_ovseg.io import read
    tex = np.zeros((16, 64, 3), np.uint8)
    for k in range(4):
        tex[:, 16 * k:16 * (k + 1)] = [255, 0, 0] if k % 2 == 0 else [0, 0, 255]
    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(tex),
                                              baseColorFactor=[255, 255, 255, 255])
    quad = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False,
                           visual=trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], material=mat))
    quad.export(tmp_path / "quad.glb")
    mesh = read(tmp_path / "quad.glb")
    assert isinstance(mesh, Mesh) and mesh.texture.shape == (16, 64, 3) and mesh.uv.shape == (4, 2)
    assert mesh.vertex_rgb[0].tolist() == [255, 0, 0] and mesh.vertex_rgb[1].tolist() == [0, 0, 255]
    cam = make_camera([0.5, 0.5, 2.0], [0.5, 0.5, 0.0], width=128, height=32, up=(0, 1, 0), hfov_deg=30.0)
    v = render_view(mesh, cam)
    row = v.rgb[16]
    hit = v.index[16] >= 0
    u = (np.flatnonzero(hit) - np.flatnonzero(hit)[0]) / hit.sum()  # position across the quad
    stripe = (u * 4).astype(int)
    inner = np.abs(u * 4 - np.round(u * 4)) > 0.2                     # away from stripe edges
    colours = row[hit][inner]
    red = colours[:, 0] > colours[:, 2]
    assert (red == (stripe[inner] % 2 == 0)).all() and len(set(stripe[inner])) == 4


def test_cli_render_cloud(shared_data, tmp_path, capsys):
    out = tmp_path / "las"
    rc = main(["render", str(shared_data / "las" / "sample_c.las"), "--out", str(out), "--max-views", "6",
               "--attribute", "classification", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert 1 <= res["views"] <= 6 and 0.5 < res["coverage"] <= 1.0
    for f in res["files"]:
        assert all((out / name).is_file() for name in f.values())
    cam = json.loads((out / "view000.json").read_text())
    assert cam["camera"]["width"] == 640 and "near" in cam["camera"]
    idx = np.load(out / "view000.index.npy")
    assert idx.shape == (480, 640) and idx.max() < 14408
    assert (out / "contact_sheet.png").stat().st_size < 400_000


def test_cli_render_rgbd_folder(shared_data, tmp_path, capsys):
    out = tmp_path / "kitchen"
    rc = main(["render", str(shared_data / "7scenes-redkitchen"), "--out", str(out), "--max-views", "2", "--json",
               "--depth-format", "npy", "--cloud-frames", "8"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["views"] == 2 and res["coverage"] > 0.1
    d = np.load(out / "view000.depth.npy")
    assert d.shape == (480, 640) and d.max() > 1.0


def test_cli_render_bad_input(shared_data, tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.ply" in capsys.readouterr().err
    las = str(shared_data / "las" / "warsaw_small.las")
    assert main(["render", las, "--out", str(tmp_path / "o"), "--attribute", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "classification" in err and len(err.strip().splitlines()) == 1
    scene = str(shared_data / "scannet-scene0000" / "scene.json")
    assert main(["render", scene, "--out", str(tmp_path / "o")]) == 2
    assert "--cloud" in capsys.readouterr().err
