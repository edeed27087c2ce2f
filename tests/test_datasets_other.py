"""S3DIS, Matterport3D, SensatUrban and SemanticKITTI in their official layouts: splits, points,
ground truth, instances and (Matterport) frames read back exactly as the fixture writers of
dataset_fixtures_other.py wrote them from the real shared data, and one-line errors naming the
file for malformed inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset_fixtures_other import (MP_HOUSES, SENSAT_TILES, mp_tsv_rows, write_matterport,
                                    write_region_ply, write_s3dis, write_semantickitti, write_sensaturban,
                                    write_sensaturban_ply)
from pc_ovseg.datasets import DATASETS, get_dataset
from pc_ovseg.errors import InputError, shown_path
from pc_ovseg.labels import load_labelset

VAL_HOUSE, TRAIN_HOUSE = list(MP_HOUSES)


def _one_line(exc: InputError, path) -> str:
    msg = str(exc)
    assert "\n" not in msg and exc.path == str(path) and msg.startswith(shown_path(str(path))), msg
    return msg


def test_registered():
    from pc_ovseg.datasets import _load_all
    _load_all()
    assert {"matterport", "s3dis", "sensaturban", "semantickitti"} <= set(DATASETS.names())
    assert DATASETS["semantickitti"].benchmark_format == "semantickitti"
    assert DATASETS["matterport"].has_frames and not DATASETS["s3dis"].has_frames


# --- S3DIS ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3dis(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("s3dis") / "Stanford3dDataset_v1.2_Aligned_Version"
    return root, write_s3dis(root, shared_data)


def test_s3dis_splits(s3dis):
    root, _ = s3dis
    ds = get_dataset("s3dis", root)
    assert ds.scenes("val") == ["Area_5_office_1"]
    assert ds.scenes("train") == ["Area_1_office_2", "Area_1_office_10"]     # numbers by value
    assert ds.scenes("all") == ["Area_1_office_2", "Area_1_office_10", "Area_5_office_1"]
    assert get_dataset("s3dis", root.parent).scenes("val") == ["Area_5_office_1"]  # the release's parent
    with pytest.raises(InputError, match="splits train, val, all"):
        ds.scenes("test")
    with pytest.raises(InputError, match="scored in s3dis13"):
        get_dataset("s3dis", root, labels="scannet20")
    with pytest.raises(InputError, match="not an Area_N/<room>/Annotations"):
        ds.load("Area_5_office_9")


@pytest.mark.parametrize("name", ["Area_5_office_1", "Area_1_office_10"])
def test_s3dis_load(s3dis, name):
    root, want = s3dis
    w = want[name]
    g = get_dataset("s3dis", root).load(name)
    ls = load_labelset("s3dis13")
    assert g.name == name and g.labelset.name == "s3dis13" and g.frames is None and g.mesh is None
    np.testing.assert_allclose(g.cloud.world_xyz, w["xyz"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(g.cloud.rgb, w["rgb"])
    np.testing.assert_array_equal(g.labels, w["labels"])
    np.testing.assert_array_equal(g.instances, w["instances"])
    assert g.meta["files"] == w["files"] and g.meta["annotations"] == len(w["files"])
    assert g.labels.min() >= 0 and g.labels.max() < 13 and len(np.unique(g.instances)) == len(w["files"])
    assert "stairs_1.txt" in w["files"]                                  # stairs count as clutter
    stairs = g.instances == w["files"].index("stairs_1.txt") + 1
    assert (g.labels[stairs] == ls.id_of("clutter")).all()
    for cls in ("wall", "floor", "ceiling", "table", "door", "window", "clutter"):
        assert (g.labels == ls.id_of(cls)).any(), cls


def _copy_room(s3dis, tmp_path) -> tuple[Path, Path]:
    root, _ = s3dis
    dst = tmp_path / "s3dis"
    shutil.copytree(root / "Area_1" / "office_10", dst / "Area_1" / "office_10")
    return dst, dst / "Area_1" / "office_10" / "Annotations"


def test_s3dis_bad_files(s3dis, tmp_path):
    root, ann = _copy_room(s3dis, tmp_path)
    ds = get_dataset("s3dis", root)
    f = ann / "wall_1.txt"
    good = f.read_bytes()
    lines = good.split(b"\n")
    lines[2] = b" ".join(lines[2].split()[:5])                     # 5 numbers on line 3
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as e:
        ds.load("Area_1_office_10")
    assert "line 3 holds 5 values" in _one_line(e.value, f)
    lines[2] = b"1.0 2.0 3.0 185\x10187 182"                       # the v1.2 defect's kind of line
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match="line 3 holds 5 values"):
        ds.load("Area_1_office_10")
    lines[2] = b"1.0 2.0 abc 185 187 182"
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as e:
        ds.load("Area_1_office_10")
    assert "line 3 holds a value that is not a finite number" in _one_line(e.value, f)
    lines[2] = b"1.0 2.0 3.0 185 187 300"
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match="colour outside 0..255"):
        ds.load("Area_1_office_10")
    f.write_bytes(good)
    (ann / "robot_1.txt").write_bytes(good)
    with pytest.raises(InputError) as e:
        ds.load("Area_1_office_10")
    assert "S3DIS class" in _one_line(e.value, ann / "robot_1.txt")
    (ann / "robot_1.txt").unlink()
    (ann / "chair_9.txt").write_bytes(b"")
    with pytest.raises(InputError) as e:
        ds.load("Area_1_office_10")
    assert "empty" in _one_line(e.value, ann / "chair_9.txt")


# --- Matterport3D -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mp(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("matterport")
    return root, write_matterport(root, shared_data)


def _vote(faces, face_label, n) -> np.ndarray:
    """OpenScene's per-vertex vote: a (vertex, 1 + label) count matrix, argmax (first wins), -1."""
    counts = np.zeros((n, int(face_label.max()) + 2), np.int64)
    for k in range(3):
        np.add.at(counts, (faces[:, k], face_label + 1), 1)
    return counts.argmax(1) - 1


def _face_classes(rows, labelset) -> dict[int, int]:
    ls = load_labelset(labelset)
    if ls.raw_map is not None:
        return {r["index"]: ls.raw_map.get(r["nyu40id"], -1) for r in rows}
    return {r["index"]: ls.class_names.index(r["nyuClass"]) if r["nyuClass"] in ls.class_names else -1 for r in rows}


def test_matterport_splits(mp):
    root, _ = mp
    ds = get_dataset("matterport", root)
    assert ds.scenes("val") == [f"{VAL_HOUSE}_region0", f"{VAL_HOUSE}_region1"]
    assert ds.scenes("train") == [f"{TRAIN_HOUSE}_region0"]
    with pytest.raises(InputError, match="no scenes_test.txt"):
        ds.scenes("test")
    with pytest.raises(InputError, match="scored in matterport21, matterport160"):
        get_dataset("matterport", root, labels="scannet20")


@pytest.mark.parametrize("labelset", ["matterport21", "matterport160"])
def test_matterport_load(mp, labelset):
    root, want = mp
    ds = get_dataset("matterport", root, labels=labelset)
    cls = _face_classes(want["rows"], labelset)
    ls = load_labelset(labelset)
    for name in (f"{VAL_HOUSE}_region0", f"{VAL_HOUSE}_region1", f"{TRAIN_HOUSE}_region0"):
        w = want[name]
        g = ds.load(name)
        n = len(w["xyz"])
        np.testing.assert_array_equal(g.cloud.xyz, w["xyz"])
        np.testing.assert_array_equal(g.cloud.rgb, w["rgb"])
        np.testing.assert_array_equal(g.mesh.faces, w["faces"])
        face_label = np.array([cls.get(int(c), -1) for c in w["category_id"]])
        np.testing.assert_array_equal(g.labels, _vote(w["faces"], face_label, n))
        assert g.labels.min() >= -1 and g.labels.max() < len(ls.class_names)
        assert len(np.unique(g.labels[g.labels >= 0])) >= 8
        assert (g.labels[np.setdiff1d(np.arange(n), w["faces"])] == -1).all()   # in no face: unannotated
        groups = json.loads((Path(g.mesh.source[:-4] + ".semseg.json")).read_text())["segGroups"]
        oid = {s: gr["objectId"] + 1 for gr in groups for s in gr["segments"]}
        face_inst = np.array([oid.get(int(s), 0) for s in w["segment"]])
        np.testing.assert_array_equal(g.instances, _vote(w["faces"], face_inst - 1, n) + 1)
        assert len(np.unique(g.instances[g.instances > 0])) > 10
    # the two label sets agree where they name the same class
    g21 = get_dataset("matterport", root).load(f"{VAL_HOUSE}_region0")
    g160 = get_dataset("matterport", root, labels="matterport160").load(f"{VAL_HOUSE}_region0")
    l21, l160 = load_labelset("matterport21"), load_labelset("matterport160")
    checked = 0
    for c in ("wall", "floor", "ceiling", "door", "window", "curtain", "sink", "toilet"):
        m = g21.labels == l21.id_of(c)
        if m.any():
            assert (g160.labels[m] == l160.id_of(c)).mean() > 0.9, c
            checked += 1
    assert checked >= 4


def test_matterport_frames(mp):
    from PIL import Image
    from pc_ovseg.views.frames import frame_view
    root, want = mp
    frames = want["frames"]
    ds = get_dataset("matterport", root)
    g0, g1 = ds.load(f"{VAL_HOUSE}_region0"), ds.load(f"{VAL_HOUSE}_region1")
    assert g0.frames.names == ["camA_i0_0", "camD_i0_3"] and g1.frames.names == ["camB_i1_1"]  # centre in box + 1 m
    assert get_dataset("matterport", root).load(f"{TRAIN_HOUSE}_region0").frames is None
    assert g0.meta["frames_source"].endswith(f"{VAL_HOUSE}.conf")
    for g, cam, k in ((g0, "camA", 0), (g0, "camD", 1), (g1, "camB", 0)):
        w = frames[cam]
        c = g.frames.cameras[k]
        np.testing.assert_allclose(c.cam_to_world, w["pose"], atol=1e-8)      # OpenGL axes flipped back
        np.testing.assert_allclose(c.K, w["K"], atol=1e-6)
        assert (c.width, c.height) == (640, 480)
        f = g.frames[k]
        np.testing.assert_array_equal(f.depth, w["depth"].astype(np.float32) / np.float32(4000.0))
        path = root / "v1" / "scans" / VAL_HOUSE / "undistorted_color_images" / VAL_HOUSE / \
            "undistorted_color_images" / w["color"]
        np.testing.assert_array_equal(f.color, np.asarray(Image.open(path).convert("RGB")))
        assert (f.depth > 0).mean() > 0.3
        assert len(frame_view(f, g.cloud).point_ids) > 0.15 * len(g.cloud)    # the frame sees its region
    # frame_skip keeps every Nth frame of those that see the region
    assert get_dataset("matterport", root, frame_skip=2).load(f"{VAL_HOUSE}_region0").frames.names == ["camA_i0_0"]


def _copy_house(mp, tmp_path) -> tuple[Path, Path]:
    root, _ = mp
    dst = tmp_path / "mp"
    shutil.copytree(root / "metadata", dst / "metadata")
    shutil.copytree(root / "v1" / "scans" / VAL_HOUSE, dst / "v1" / "scans" / VAL_HOUSE)
    shutil.copy(root / "scenes_val.txt", dst / "scenes_val.txt")
    return dst, dst / "v1" / "scans" / VAL_HOUSE


def test_matterport_bad_files(mp, tmp_path):
    root, want = mp
    dst, house = _copy_house(mp, tmp_path)
    ply = house / "region_segmentations" / VAL_HOUSE / "region_segmentations" / "region0.ply"
    w = want[f"{VAL_HOUSE}_region0"]
    # no category_id on the faces: write a PLY whose faces lack it
    text = ply.read_bytes()
    head, _, _ = text.partition(b"end_header\n")
    assert b"category_id" in head
    ds = get_dataset("matterport", dst)
    write_region_ply(ply, w["xyz"], w["rgb"], w["faces"], np.full(len(w["faces"]), 10_000), w["segment"], 0)
    with pytest.raises(InputError) as e:
        ds.load(f"{VAL_HOUSE}_region0")
    assert "category_id 10000" in _one_line(e.value, ply)
    from dataset_fixtures import write_ply
    write_ply(ply, w["xyz"], w["rgb"], faces=w["faces"])
    with pytest.raises(InputError) as e:
        ds.load(f"{VAL_HOUSE}_region0")
    assert "no 'category_id'" in _one_line(e.value, ply)
    write_ply(ply, w["xyz"], w["rgb"])
    with pytest.raises(InputError) as e:
        ds.load(f"{VAL_HOUSE}_region0")
    assert "no face element" in _one_line(e.value, ply)
    ply.write_bytes(text[: len(text) // 2])
    with pytest.raises(InputError) as e:
        ds.load(f"{VAL_HOUSE}_region0")
    assert "end-of-file" in _one_line(e.value, ply) or "truncated" in str(e.value)
    ply.write_bytes(text)
    # .conf: a scan line with 15 numbers, and a tsv without nyu40id
    conf = house / "undistorted_camera_parameters" / VAL_HOUSE / "undistorted_camera_parameters" / f"{VAL_HOUSE}.conf"
    good = conf.read_text()
    lines = good.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("scan"))
    lines[k] = " ".join(lines[k].split()[:-1])
    conf.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        get_dataset("matterport", dst).load(f"{VAL_HOUSE}_region0")
    assert f"line {k + 1}" in _one_line(e.value, conf)
    conf.write_text(good)
    fsegs = ply.with_name("region0.fsegs.json")
    fsegs.write_text(json.dumps({"segIndices": [1, 2, 3]}))
    with pytest.raises(InputError) as e:
        get_dataset("matterport", dst).load(f"{VAL_HOUSE}_region0")
    assert "'segIndices' has 3 entries" in _one_line(e.value, fsegs)
    fsegs.unlink()   # without fsegs.json the PLY's segment_id says the same
    g = get_dataset("matterport", dst).load(f"{VAL_HOUSE}_region0")
    np.testing.assert_array_equal(g.instances, get_dataset("matterport", root).load(f"{VAL_HOUSE}_region0").instances)
    tsv = dst / "metadata" / "category_mapping.tsv"
    tsv.write_text(tsv.read_text().replace("nyu40id", "nyu40_id"))
    with pytest.raises(InputError) as e:
        get_dataset("matterport", dst).load(f"{VAL_HOUSE}_region0")
    assert "'nyu40id'" in _one_line(e.value, tsv)
    assert mp_tsv_rows()[0]["index"] == 1
    (dst / "scenes_test.txt").write_text(f"# a house list\n{VAL_HOUSE}\nZZZZnotHere\n")
    with pytest.warns(UserWarning, match="1 houses of scenes_test.txt have no region_segmentations"):
        assert get_dataset("matterport", dst).scenes("test") == [f"{VAL_HOUSE}_region0", f"{VAL_HOUSE}_region1"]
    (dst / "scenes_test.txt").write_text("ZZZZnotHere\n")
    with pytest.raises(InputError, match="no region_segmentations of any house"):
        get_dataset("matterport", dst).scenes("test")


# --- SensatUrban ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sensat(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("sensaturban")
    return root, write_sensaturban(root, shared_data)


def test_sensaturban_splits(sensat):
    root, _ = sensat
    ds = get_dataset("sensaturban", root)
    assert ds.scenes("val") == ["birmingham_block_1", "birmingham_block_5", "cambridge_block_10", "cambridge_block_7"]
    assert ds.scenes("train") == ["birmingham_block_0", "birmingham_block_3", "birmingham_block_10"]
    assert ds.scenes("test") == ["birmingham_block_2"]


@pytest.mark.parametrize("tile", list(SENSAT_TILES))
def test_sensaturban_load(sensat, tile):
    root, want = sensat
    w = want[tile]
    g = get_dataset("sensaturban", root).load(tile)
    np.testing.assert_allclose(g.cloud.world_xyz, w["xyz"], rtol=0, atol=2e-3)
    assert np.abs(g.cloud.xyz).max() < 5000                        # big coordinates kept by an origin
    np.testing.assert_array_equal(g.cloud.rgb, w["rgb"])
    np.testing.assert_array_equal(g.labels, w["labels"])
    assert "class" not in g.cloud.fields and g.frames is None and g.instances is None
    assert g.meta["split_folder"] == SENSAT_TILES[tile][0]
    if SENSAT_TILES[tile][4]:
        assert g.labels.min() >= 0 and g.labels.max() < 13
    else:
        assert (g.labels == -1).all()


def test_sensaturban_bad_files(sensat, tmp_path):
    root, want = sensat
    (tmp_path / "train").mkdir()
    w = want["birmingham_block_1"]
    p = tmp_path / "train" / "birmingham_block_1.ply"
    write_sensaturban_ply(p, w["xyz"], w["rgb"])              # a train tile without class
    ds = get_dataset("sensaturban", tmp_path)
    with pytest.warns(UserWarning, match="lacks the val tiles"):
        assert ds.scenes("val") == ["birmingham_block_1"]
    with pytest.raises(InputError) as e:
        ds.load("birmingham_block_1")
    assert "no vertex property 'class'" in _one_line(e.value, p)
    write_sensaturban_ply(p, w["xyz"], w["rgb"], np.full(len(w["xyz"]), 13))
    with pytest.raises(InputError) as e:
        ds.load("birmingham_block_1")
    assert "outside 0..12" in _one_line(e.value, p)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(InputError) as e:
        ds.load("birmingham_block_1")
    assert "truncated" in _one_line(e.value, p)
    with pytest.raises(InputError, match="not in train/ or test/"):
        ds.load("cambridge_block_99")
    with pytest.raises(InputError, match="no test tile"):
        ds.scenes("test")


# --- SemanticKITTI ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kitti(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("semantickitti") / "dataset"
    return root, write_semantickitti(root, shared_data)


def test_semantickitti_splits(kitti):
    root, _ = kitti
    ds = get_dataset("semantickitti", root)
    assert ds.scenes("val") == ["08_000000", "08_000001", "08_000002"]
    assert ds.scenes("train") == ["00_000000", "00_000001", "00_000002"]
    assert ds.scenes("test") == ["11_000000"]
    assert get_dataset("semantickitti", root, frame_skip=2).scenes("val") == ["08_000000", "08_000002"]
    assert get_dataset("semantickitti", root.parent).scenes("val") == ds.scenes("val")   # dataset/ found inside
    with pytest.raises(InputError, match="NN_NNNNNN"):
        ds.load("08-000000")


@pytest.mark.parametrize("name", ["08_000000", "08_000002", "00_000001", "11_000000"])
def test_semantickitti_load(kitti, name):
    root, want = kitti
    w = want[name]
    g = get_dataset("semantickitti", root).load(name)
    np.testing.assert_array_equal(g.cloud.xyz, w["xyz"])
    np.testing.assert_array_equal(g.cloud.fields["remission"], np.zeros(len(w["xyz"]), np.float32))
    np.testing.assert_array_equal(g.labels, w["labels"])
    assert g.labels.min() >= -1 and g.labels.max() <= 19
    if w["raw"] is None:
        assert g.instances is None and (g.labels == -1).all()
        return
    inst = w["raw"] >> 16
    np.testing.assert_array_equal(g.instances, np.where(inst > 0, w["raw"], 0))
    if name.startswith("08"):
        pairs = {(int(a), int(b)) for a, b in zip(w["labels"][inst > 0], inst[inst > 0])}
        assert len(np.unique(g.instances[g.instances > 0])) == len(pairs) >= 10
        assert (g.labels[g.instances > 0] > 0).all()          # things only
        assert ((w["raw"] & 0xFFFF) == 252).any()            # moving-car folded onto car
    else:
        assert (g.instances == 0).all()


def test_semantickitti_poses_and_accumulation(kitti):
    root, want = kitti
    ds = get_dataset("semantickitti", root)
    for k in range(3):
        np.testing.assert_allclose(ds.pose(f"08_{k:06d}"), want[f"08_{k:06d}"]["pose"], atol=1e-9)
    acc = ds.accumulated("08_000002", 3)
    assert acc.meta["scans"] == ["08_000002", "08_000001", "08_000000"]
    own = acc.meta["scan_points"]
    assert own == len(want["08_000002"]["xyz"]) and len(acc.cloud) == own + 2 * len(want["08_000000"]["xyz"])
    np.testing.assert_array_equal(acc.cloud.xyz[:own], want["08_000002"]["xyz"])
    inv = np.linalg.inv(want["08_000002"]["pose"])
    world = np.concatenate([want[f"08_{k:06d}"]["world"] for k in (2, 1, 0)])
    np.testing.assert_allclose(acc.cloud.xyz, world @ inv[:3, :3].T + inv[:3, 3], atol=1e-3)
    np.testing.assert_array_equal(acc.labels, np.concatenate([want[f"08_{k:06d}"]["labels"] for k in (2, 1, 0)]))
    assert len(ds.accumulated("08_000000", 3).meta["scans"]) == 1
    with pytest.raises(InputError) as e:
        ds.pose("00_000000")
    _one_line(e.value, root / "sequences" / "00" / "calib.txt")


def test_semantickitti_benchmark_file(kitti, tmp_path):
    from pc_ovseg.export import write_benchmark
    root, want = kitti
    g = get_dataset("semantickitti", root).load("08_000000")
    p = write_benchmark(tmp_path, g.labelset.to_raw(g.labels), "semantickitti", g.name)
    assert p.endswith("08_000000.label")
    from pc_ovseg.labels import remap_labels
    back = np.fromfile(p, "<u4")
    np.testing.assert_array_equal(remap_labels(back & 0xFFFF, g.labelset), g.labels)


def test_semantickitti_bad_files(kitti, tmp_path):
    root, _ = kitti
    dst = tmp_path / "kitti"
    shutil.copytree(root / "sequences" / "08", dst / "sequences" / "08")
    ds = get_dataset("semantickitti", dst)
    lab = dst / "sequences" / "08" / "labels" / "000001.label"
    good = lab.read_bytes()
    lab.write_bytes(good[:-8])                                   # two labels short
    with pytest.raises(InputError) as e:
        ds.load("08_000001")
    assert "labels, 000001.bin has" in _one_line(e.value, lab)
    lab.write_bytes(good[:-3])
    with pytest.raises(InputError, match="whole number of uint32"):
        ds.load("08_000001")
    raw = np.frombuffer(good, "<u4").copy()
    raw[5] = 77                                                  # no such raw class
    lab.write_bytes(raw.tobytes())
    with pytest.raises(InputError) as e:
        ds.load("08_000001")
    assert "raw id 77" in _one_line(e.value, lab)
    lab.unlink()
    with pytest.raises(InputError) as e:
        ds.load("08_000001")
    assert "val split" in _one_line(e.value, lab)
    binp = dst / "sequences" / "08" / "velodyne" / "000000.bin"
    binp.write_bytes(binp.read_bytes()[:-6])
    with pytest.raises(InputError) as e:
        ds.load("08_000000")
    assert "float32 x y z remission" in _one_line(e.value, binp)
    poses = dst / "sequences" / "08" / "poses.txt"
    poses.write_text(poses.read_text().splitlines()[0] + "\n1 2 3\n")
    with pytest.raises(InputError) as e:
        ds.pose("08_000002")
    assert "line 2" in _one_line(e.value, poses)
    with pytest.raises(InputError, match="no scan"):
        ds.scenes("train")


# --- the bench CLI over these roots ---------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["matterport", "semantickitti"])
def test_bench_cli(dataset, mp, kitti, tmp_path):
    """`pc-ovseg bench <name> --root R --split val --oracle` scores a scene: Matterport through its
    own frames, SemanticKITTI with its benchmark .label file of raw ids."""
    import os
    import subprocess
    import sys
    import pc_ovseg
    root = {"matterport": mp, "semantickitti": kitti}[dataset][0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(pc_ovseg.__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pc_ovseg", "bench", dataset, "--root", str(root), "--split", "val",
                        "--oracle", "--limit", "1", "--max-views", "4", "--out", str(out), "--no-progress", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["scenes_done"] == 1 and s["miou"] > 0.3, s
    scene = get_dataset(dataset, root).scenes("val")[0]
    res = json.loads((out / scene / "result.json").read_text())
    if dataset == "matterport":
        assert res["frames"] == 2 and res["kind"] == "frames"
    else:
        lab = np.fromfile(out / scene / f"{scene}.label", "<u4")
        assert len(lab) == res["points"] == len(get_dataset(dataset, root).load(scene).cloud)
