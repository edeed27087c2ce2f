"""ScanNet in its official layout: the .sens reader (round trip, laziness, bad files) and the
``scannet`` dataset (splits, points, ScanNet-20/200 labels, instances, frames, bad files), on a
tiny root written once per module from the real labelled scene0000_00."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pc_ovseg
import pc_ovseg.io as pio
from dataset_fixtures import (COLOR_WH, DEPTH_WH, K_COLOR, K_DEPTH, instance_category,
                              load_labelled, render_frames, variant, write_ply, write_scannet, write_sens)
from pc_ovseg.data import FrameSequence
from pc_ovseg.datasets import get_dataset
from pc_ovseg.errors import InputError, shown_path
from pc_ovseg.io.rgbd import resample_depth
from pc_ovseg.io.sens import SensFrames, read_sens
from pc_ovseg.labels import load_labelset, remap_labels
from pc_ovseg.views.cameras import look_at

PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]
FRAMES = 60
N_POINTS = 81_369


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_data) -> Path:
    """The three-scene root with .sens frames (and the export layout for scene0000_00)."""
    return write_scannet(tmp_path_factory.mktemp("scannet"), shared_data, frames=FRAMES, exported=("scene0000_00",))


@pytest.fixture(scope="module")
def bare(tmp_path_factory, shared_data) -> Path:
    """One scene without frames, split lists under splits/: cheap to copy and break."""
    return write_scannet(tmp_path_factory.mktemp("scannet_bare"), shared_data, ("scene0000_00",), frames=0,
                         splits_dir="splits")


@pytest.fixture(scope="module")
def real(shared_data) -> dict:
    return load_labelled(shared_data)


@pytest.fixture(scope="module")
def few_frames(real) -> list[tuple]:
    """Five frames rendered from the real cloud (K_color, K_depth, colour, depth mm, pose)."""
    eye = np.array([0.0, 0.0, 1.4])
    poses = [look_at(eye, eye + [np.cos(a), np.sin(a), -0.3]) for a in np.radians([0, 72, 144, 216, 288])]
    return render_frames(real["xyz"], real["rgb"], [(p, 0.1) for p in poses])


def _cli(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PC_OVSEG_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pc_ovseg", *map(str, argv)], capture_output=True, text=True,
                          timeout=120, env=env)


def _one_line(exc: InputError, path) -> str:
    msg = str(exc)
    assert "\n" not in msg and exc.path == str(path) and msg.startswith(shown_path(str(path))), msg
    return msg


# --- the .sens reader -----------------------------------------------------------------------------

@pytest.mark.parametrize("codecs", [(2, 1), (1, 0), (0, 1)], ids=["jpeg-zlib", "png-raw", "raw-zlib"])
def test_sens_round_trip(tmp_path, few_frames, codecs):
    p = tmp_path / "s.sens"
    assert write_sens(p, few_frames, color_codec=codecs[0], depth_codec=codecs[1]) == 5
    seq = pio.read(p)
    assert isinstance(seq, FrameSequence) and len(seq) == 5 and seq.names == ["0", "1", "2", "3", "4"]
    assert seq.has_color and seq.has_depth and seq.depth_scale == 1000.0
    for i, (_, _, color, depth_mm, pose) in enumerate(few_frames):
        cam = seq.cameras[i]
        assert (cam.width, cam.height) == COLOR_WH
        np.testing.assert_allclose(cam.K, K_COLOR, atol=1e-4)
        np.testing.assert_allclose(cam.cam_to_world, pose, atol=1e-6)
        f = seq[i]
        assert f.color.shape == (480, 640, 3) and f.depth.shape == (240, 320)
        diff = np.abs(f.color.astype(int) - color.astype(int))
        if codecs[0] == 2:
            assert diff.mean() < 4 and np.median(diff[200:280, 280:360]) <= 4   # JPEG error
        else:
            assert diff.max() == 0
        # depth in metres, resampled from the depth camera onto the scaled colour camera
        want = resample_depth(depth_mm.astype(np.float32) / 1000, K_DEPTH, cam.scaled(*DEPTH_WH).K)
        np.testing.assert_array_equal(f.depth, want)
        r, c = 120, 160
        assert f.depth[r, c] == pytest.approx(want[r, c]) and 0.3 < f.depth[r, c] < 10
        assert np.array_equal(f.depth_camera.K, cam.scaled(*DEPTH_WH).K)


def test_sens_frame_skip_and_lazy_index(root, monkeypatch):
    sens = root / "scans" / "scene0000_00" / "scene0000_00.sens"
    full = read_sens(sens)
    depth15 = full[15].depth
    import pc_ovseg.io.sens as sens_mod
    decoded = []
    real_load_color = sens_mod.load_color
    monkeypatch.setattr(sens_mod, "load_color", lambda p, d=None: decoded.append(p) or real_load_color(p, d))
    seq = read_sens(sens, frame_skip=5)
    assert len(decoded) == 1               # only the first frame is decoded, to fail early
    assert seq.names == [str(i) for i in range(0, FRAMES, 5)]
    for j, i in enumerate(range(0, FRAMES, 5)):
        np.testing.assert_array_equal(seq.cameras[j].cam_to_world, full.cameras[i].cam_to_world)
    # the sequence keeps where each frame's bytes are, never the bytes
    loader = seq.loader.__self__
    assert isinstance(loader, SensFrames)
    assert loader.offsets.dtype == np.int64 and loader.sizes.shape == (len(seq), 2)
    assert not any(isinstance(v, (bytes, bytearray, memoryview)) for v in vars(loader).values())
    assert loader.offsets.nbytes + loader.sizes.nbytes < 1024
    np.testing.assert_array_equal(seq[3].depth, depth15)
    assert len(decoded) == 2


def test_sens_frame_decoded_only_when_asked(tmp_path, few_frames):
    p = tmp_path / "s.sens"
    write_sens(p, few_frames)
    seq = read_sens(p)
    off, (c, _) = int(seq.loader.__self__.offsets[3]), seq.loader.__self__.sizes[3]
    data = bytearray(p.read_bytes())
    data[off:off + int(c)] = b"\x00" * int(c)   # frame 3's JPEG is garbage, sizes intact
    p.write_bytes(bytes(data))
    seq = read_sens(p)                          # indexing reads headers only: still fine
    assert len(seq) == 5 and seq[4].color is not None
    with pytest.raises(InputError) as ei:
        seq[3]
    assert "frame 3" in _one_line(ei.value, p)


def test_sens_skips_nan_pose(tmp_path, few_frames):
    frames = list(few_frames)
    frames[2] = (*frames[2][:4], np.full((4, 4), -np.inf))   # ScanNet's lost tracking
    p = tmp_path / "s.sens"
    write_sens(p, frames)
    with pytest.warns(UserWarning, match="skipped 1 frames"):
        seq = read_sens(p)
    assert seq.names == ["0", "1", "3", "4"]
    np.testing.assert_allclose(seq.cameras[2].cam_to_world, frames[3][4], atol=1e-6)
    bad = list(few_frames)
    bad[1] = (*bad[1][:4], np.diag([2.0, 1, 1, 1]))          # finite but not rigid: an error
    write_sens(p, bad)
    with pytest.raises(InputError, match="frame 1: pose rotation is not orthonormal"):
        read_sens(p)


def test_sens_bad_files(tmp_path, root, few_frames):
    good = tmp_path / "good.sens"
    write_sens(good, few_frames)
    data = good.read_bytes()
    cases = {
        "cut.sens": (data[: len(data) * 3 // 5], "truncated .sens: frame"),
        "head.sens": (data[:100], "truncated .sens"),
        "version.sens": (b"\x03" + data[1:], "unsupported .sens version 3"),
        "count.sens": (None, "header says 1000000 frames"),
        "width.sens": (None, "absurd .sens colour size"),
        "payload.sens": (None, "absurd .sens payload size in frame 0"),
    }
    name_end = 12 + len("StructureSensor")
    calib = name_end + 256
    count = bytearray(data)
    count[calib + 28:calib + 36] = (10 ** 6).to_bytes(8, "little")
    cases["count.sens"] = (bytes(count), cases["count.sens"][1])
    width = bytearray(data)
    width[calib + 8:calib + 12] = (10 ** 6).to_bytes(4, "little")
    cases["width.sens"] = (bytes(width), cases["width.sens"][1])
    payload = bytearray(data)
    first = calib + 36
    payload[first + 80:first + 88] = (10 ** 12).to_bytes(8, "little")
    cases["payload.sens"] = (bytes(payload), cases["payload.sens"][1])
    for name, (body, expect) in cases.items():
        p = tmp_path / name
        p.write_bytes(body)
        with pytest.raises(InputError) as ei:
            read_sens(p)
        assert expect in _one_line(ei.value, p), name
    # the command line: one error line, exit 2; a good .sens describes as frames
    r = _cli("info", tmp_path / "cut.sens")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "truncated .sens" in lines[0] and "Traceback" not in r.stderr
    r = _cli("info", "--json", good)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["type"] == "rgbd_frames" and d["frames"] == 5 and d["depth_size"] == [320, 240]


# --- the dataset ----------------------------------------------------------------------------------

def test_scenes_and_splits(root, bare, tmp_path):
    ds = get_dataset("scannet", root)
    assert ds.scenes("val") == ["scene0000_00", "scene0000_01", "scene0000_02"]
    assert ds.scenes("train") == ["scene0000_00"]
    assert get_dataset("scannet", bare).scenes("val") == ["scene0000_00"]   # splits/ folder
    with pytest.raises(InputError, match="scans_test"):
        ds.scenes("test")
    with pytest.raises(InputError, match="splits train, val, test"):
        ds.scenes("trainval")
    nolist = tmp_path / "nolist"
    (nolist / "scans").mkdir(parents=True)
    for s in ("scene0002_00", "scene0001_00"):
        (nolist / "scans" / s).mkdir()
    with pytest.warns(UserWarning, match="no scannetv2_val.txt"):
        assert get_dataset("scannet", nolist).scenes("val") == ["scene0001_00", "scene0002_00"]
    with pytest.raises(InputError, match="not in scans/ or scans_test/"):
        ds.load("scene0999_00")
    with pytest.raises(InputError, match="scored in scannet20, scannet200"):
        get_dataset("scannet", root, labels="s3dis")


@pytest.mark.parametrize("name", ["scene0000_00", "scene0000_01", "scene0000_02"])
def test_load_scannet20(root, real, name):
    g = get_dataset("scannet", root, frame_skip=4).load(name)
    T, idx = variant(name, N_POINTS)
    assert len(g.cloud) == len(idx) and (name != "scene0000_00" or len(g.cloud) == N_POINTS)
    want_xyz = real["xyz"][idx].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(g.cloud.world_xyz, want_xyz, atol=1e-5)
    np.testing.assert_array_equal(g.cloud.rgb, real["rgb"][idx])
    ls = load_labelset("scannet20")
    np.testing.assert_array_equal(g.labels, remap_labels(real["sem"][idx], ls))
    assert g.labelset.name == "scannet20" and g.mesh is None
    np.testing.assert_array_equal(g.instances, real["ins"][idx])   # objectId + 1, 0 = none
    assert len(np.unique(g.instances[g.instances > 0])) == 67
    assert len(g.frames) == FRAMES // 4 and g.meta["n_frames"] == FRAMES // 4
    assert g.meta["sens"].endswith(f"{name}.sens") and g.frames.names[:3] == ["0", "4", "8"]


def test_load_scannet200(root, real):
    ds = get_dataset("scannet", root, labels="scannet200")
    ls = load_labelset("scannet200")
    for name in ("scene0000_00", "scene0000_02"):
        g = ds.load(name)
        _, idx = variant(name, N_POINTS)
        sem, ins = real["sem"][idx], real["ins"][idx]
        assert g.labelset.name == "scannet200" and g.labels.min() >= -1 and g.labels.max() < 200
        want = np.full(len(idx), -1)
        for k in np.unique(ins[ins > 0]):
            cid = ls.id_of(instance_category(int(k), int(sem[ins == k][0])))
            want[ins == k] = -1 if cid is None else cid
        np.testing.assert_array_equal(g.labels, want)
        # consistent with ScanNet-20 where the classes are the same
        for cls in ("wall", "floor", "bed", "door", "window", "curtain", "toilet", "sink", "desk"):
            m = remap_labels(sem, load_labelset("scannet20")) == load_labelset("scannet20").id_of(cls)
            if m.any():
                assert (g.labels[m] == ls.id_of(cls)).all(), cls
        assert (g.labels[sem == 0] == -1).all()
        assert len(np.unique(g.labels[g.labels >= 0])) >= 20
        assert (g.labels == -1).sum() > (sem == 0).sum()     # "dollhouse" is not a ScanNet-200 class


def test_frames_see_the_scene(root):
    from pc_ovseg.views.frames import frame_view
    g = get_dataset("scannet", root).load("scene0000_00")
    seen = np.zeros(len(g.cloud), bool)
    for f in g.frames:
        assert f.color.shape == (480, 640, 3) and (f.depth > 0).mean() > 0.15
        seen[frame_view(f, g.cloud).point_ids] = True
    assert seen.mean() >= 0.99, seen.mean()


def test_exported_frames_layout(root, tmp_path):
    src = root / "scans" / "scene0000_00"
    alt = tmp_path / "alt"
    d = alt / "scans" / "scene0000_00"
    d.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".sens":
            os.symlink(f, d / f.name)
    for f in ("scannetv2-labels.combined.tsv", "scannetv2_val.txt"):
        os.symlink(root / f, alt / f)
    sens = get_dataset("scannet", root, frame_skip=10).load("scene0000_00").frames
    g = get_dataset("scannet", alt, frame_skip=10).load("scene0000_00")
    assert g.meta["sens"] is None and g.meta["frames_source"] == str(d / "exported")
    assert g.frames.names == sens.names == [str(i) for i in range(0, FRAMES, 10)]
    for a, b in zip(g.frames.cameras, sens.cameras):
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=1e-5)
        np.testing.assert_allclose(a.K, b.K, atol=1e-4)
    np.testing.assert_array_equal(g.frames[1].depth, sens[1].depth)
    assert np.abs(g.frames[1].color.astype(int) - sens[1].color.astype(int)).mean() < 4
    # the export straight in the scene folder works too
    for sub in ("color", "depth", "pose", "intrinsic"):
        os.rename(d / "exported" / sub, d / sub)
    g = get_dataset("scannet", alt).load("scene0000_00")
    assert len(g.frames) == FRAMES and g.meta["frames_source"] == str(d)


def _copy(bare: Path, tmp_path: Path) -> tuple[Path, Path]:
    dst = tmp_path / "root"
    shutil.copytree(bare, dst)
    return dst, dst / "scans" / "scene0000_00"


def test_mesh_and_overlapping_objects(bare, tmp_path, real):
    root, d = _copy(bare, tmp_path)
    xyz, rgb = real["xyz"], real["rgb"]
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    write_ply(d / "scene0000_00_vh_clean_2.ply", xyz, rgb, faces=faces)
    agg_path = d / "scene0000_00.aggregation.json"
    agg = json.loads(agg_path.read_text())
    a, b = agg["segGroups"][0], agg["segGroups"][1]          # objects 1 and 2
    b["segments"] = b["segments"] + a["segments"][:1]           # the later object claims one of 1's segments
    agg_path.write_text(json.dumps(agg))
    g = get_dataset("scannet", root).load("scene0000_00")
    assert g.mesh is not None and len(g.mesh.faces) == 3 and len(g.mesh.vertices) == N_POINTS
    segs = np.array(json.loads((d / "scene0000_00_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
    moved = segs == a["segments"][0]
    assert moved.any() and (g.instances[moved] == b["objectId"] + 1).all()
    np.testing.assert_array_equal(g.instances[~moved], real["ins"][~moved])
    assert g.frames is None and g.meta["n_frames"] == 0


def test_bad_scene_files(bare, tmp_path, real):
    root, d = _copy(bare, tmp_path)
    name = "scene0000_00"
    lab, segs, agg = (d / f"{name}_vh_clean_2.labels.ply", d / f"{name}_vh_clean_2.0.010000.segs.json",
                      d / f"{name}.aggregation.json")
    keep = {p: p.read_bytes() for p in (lab, segs, agg)}

    def fails(path, expect, labels="scannet20"):
        with pytest.raises(InputError) as ei:
            get_dataset("scannet", root, labels=labels).load(name)
        assert expect in _one_line(ei.value, path)
        for p, body in keep.items():
            p.write_bytes(body)

    write_ply(lab, real["xyz"][:-5], real["rgb"][:-5], label=real["sem"][:-5])
    fails(lab, f"has {N_POINTS - 5} vertices, the mesh {name}_vh_clean_2.ply has {N_POINTS}")
    s = json.loads(keep[segs])
    segs.write_text(json.dumps({**s, "segIndices": s["segIndices"][:-1]}))
    fails(segs, f"'segIndices' has {N_POINTS - 1} entries")
    a = json.loads(keep[agg])
    a["segGroups"][4]["segments"].append(123456789)
    agg.write_text(json.dumps(a))
    fails(agg, "segGroups[4] (objectId 4) names 1 segment ids not in", labels="scannet200")
    a = json.loads(keep[agg])
    a["segGroups"][0]["segments"] = "12"
    agg.write_text(json.dumps(a))
    fails(agg, "segGroups[0] needs an integer 'objectId'")
    agg.write_text('{"segGroups": [')
    fails(agg, "not valid JSON")
    segs.write_bytes(keep[segs][:1000])
    fails(segs, "not valid JSON")
    os.remove(root / "scannetv2-labels.combined.tsv")
    with pytest.raises(InputError) as ei:
        get_dataset("scannet", root, labels="scannet200").load(name)
    assert "ScanNet-200 labels map raw categories" in _one_line(ei.value, root / "scannetv2-labels.combined.tsv")
    assert len(get_dataset("scannet", root).load(name).labels) == N_POINTS   # ScanNet-20 does not need it
    (root / "scannetv2-labels.combined.tsv").write_text("idx\tname\n1\twall\n")
    with pytest.raises(InputError, match="lacks the 'id' and 'raw_category' columns"):
        get_dataset("scannet", root, labels="scannet200").load(name)
