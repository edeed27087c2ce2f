"""Exports of a labelled result (pc_ovseg.export): what eval reads back, label identity, benchmark files.

FeatureClouds are made from ground truth (label-space one-hot features with some points relabelled),
so every expected score is known without CLIP weights.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from pc_ovseg import cli, io
from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.errors import InputError
from pc_ovseg.eval import evaluate, evaluate_files, read_point_labels
from pc_ovseg.labels import load_labelset, vocabulary
from pc_ovseg.export import export_labels, read_result_header

LAS = "las/sample_c.las"


def label_space(cloud: PointCloud, gt_ids: np.ndarray, ls, *, noise: float = 0.2, seed: int = 0):
    """A label-space FeatureCloud over ``ls`` that predicts ``gt_ids`` with a fraction relabelled;
    returns it and the label ids it predicts (-1 = unseen: GT ids outside the label set)."""
    table = np.full(max(int(gt_ids.max()), len(ls.class_names)) + 1, -1)
    table[ls.ids] = np.arange(ls.num_classes)
    pos = np.where(gt_ids >= 0, table[np.maximum(gt_ids, 0)], -1)
    rng = np.random.default_rng(seed)
    flip = (rng.random(len(pos)) < noise) & (pos >= 0)
    pos[flip] = rng.integers(0, ls.num_classes, int(flip.sum()))
    seen = pos >= 0
    feats = np.zeros((len(pos), ls.num_classes), np.float16)
    feats[seen, pos[seen]] = 1
    fc = FeatureCloud(cloud, feats, seen.astype(np.float32), seen.astype(np.uint16), "labels", list(ls.names))
    return fc, np.where(seen, ls.ids[np.maximum(pos, 0)], -1)


def run_eval(capsys, *argv):
    code = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def kitti_input(shared_data, tmp_path_factory):
    """A SemanticKITTI scan as a PLY whose own 'label' field is the ground truth (like SensatUrban)."""
    xyz = np.load(shared_data / "semantickitti" / "points_000000.npy")
    gt = np.load(shared_data / "semantickitti" / "labels_000000.npy").reshape(-1).astype(np.int32)
    path = tmp_path_factory.mktemp("kitti") / "scan.ply"
    io.write(path, PointCloud(xyz, fields={"label": gt}))
    return path, io.read_cloud(path), gt


# --- 1. eval reads the declared prediction, never the input's own label --------------------------

def test_eval_scores_the_prediction_not_the_carried_ground_truth(kitti_input, tmp_path, capsys):
    path, cloud, gt = kitti_input
    ls = load_labelset("semantickitti19")
    fc, pred = label_space(cloud, gt, ls)
    export_labels(tmp_path, fc, ls.vocabulary(), class_ids=list(ls.ids))
    expected = evaluate(pred, gt, ls).miou
    assert 0.2 < expected < 0.95
    for name in ("labels.ply", "labels.las", "labels.npz"):
        f = tmp_path / name
        back = io.read_cloud(f)
        assert np.array_equal(back.fields["input_label"], gt)      # the input's label, renamed
        assert np.array_equal(back.fields["label"], pred)          # the prediction
        assert read_result_header(f)["pred_field"] == "label"
        code, out, err = run_eval(capsys, f, "--gt", path, "--classes", "semantickitti19", "--json")
        assert code == 0, err
        assert json.loads(out)["miou"] == pytest.approx(expected), name
    # the LAS of a cloud without classification shows the prediction there, coded id + 1
    las = io.read_cloud(tmp_path / "labels.las")
    assert np.array_equal(las.fields["classification"], np.where(pred >= 0, pred + 1, 0))


def test_an_undeclared_file_with_two_label_fields_is_refused(kitti_input, tmp_path, capsys):
    path, cloud, gt = kitti_input
    two = tmp_path / "two.ply"
    io.write(two, PointCloud(cloud.xyz, fields={"label": gt, "classification": np.zeros(len(gt), np.uint8)}))
    code, _, err = run_eval(capsys, two, "--gt", path, "--classes", "semantickitti19")
    assert code == 2 and err.count("\n") == 1 and "label, classification" in err and "--pred-field" in err
    code, out, err = run_eval(capsys, two, "--gt", path, "--classes", "semantickitti19", "--pred-field", "label",
                              "--json")
    assert code == 0 and json.loads(out)["miou"] == 1.0
    with pytest.raises(InputError, match="--gt-field"):
        evaluate_files(path, two, "semantickitti19")


# --- 2. ids and codes travel with the result ---------------------------------------------------

def test_asprs_run_result_evaluates_without_labels(shared_data, tmp_path, capsys):
    src = shared_data / LAS
    cloud = io.read_cloud(src)
    gt = cloud.fields["classification"].astype(np.int64)
    ls = load_labelset("asprs")
    fc, pred = label_space(cloud, gt, ls)
    voc = vocabulary("asprs")  # what `run --labels asprs` labels with
    export_labels(tmp_path, fc, voc.pop("vocabulary"), **voc)
    expected = evaluate(pred, gt, "asprs").to_json()
    for extra in ((), ("--labels", "asprs")):
        code, out, err = run_eval(capsys, tmp_path / "labels.las", "--gt", src, "--classes", "asprs", "--json", *extra)
        assert code == 0, err
        j = json.loads(out)
        assert j["miou"] == pytest.approx(expected["miou"]) and j["coverage"] == pytest.approx(expected["coverage"])
    code, _, err = run_eval(capsys, tmp_path / "labels.las", "--gt", src, "--classes", "asprs", "--labels", "a,b")
    assert code == 2 and "leave --labels out" in err
    # a LAS from a LAS keeps classification and scan angle in their standard dimensions
    import laspy
    las = laspy.read(tmp_path / "labels.las")
    dims = set(las.point_format.dimension_names)
    assert {"label", "score", "input_red"} <= set(las.point_format.extra_dimension_names)
    assert np.array_equal(np.asarray(las.classification), cloud.fields["classification"])
    src_las = laspy.read(src)
    assert "scan_angle" in dims and np.allclose(np.asarray(las.scan_angle) * 0.006,
                                                np.asarray(src_las.scan_angle_rank), atol=0.003)
    assert np.array_equal(np.asarray(las["label"]), pred)


# --- 3. one labelling rule: every file of a result scores the same -----------------------------

def test_fused_and_every_export_give_the_same_scores(shared_data, tmp_path):
    """Text features (tiny CLIP) where a label set's prompt ensemble and its first prompts disagree."""
    from pc_ovseg.encoders import make_tiny_clip_checkpoint
    from pc_ovseg.query import QueryEngine
    src = shared_data / LAS
    cloud = io.read_cloud(src)
    gt = cloud.fields["classification"].astype(np.int64)
    ls = load_labelset("asprs")
    spec = make_tiny_clip_checkpoint(tmp_path / "tiny.pt")
    from pc_ovseg.encoders import get_encoder
    dim = get_encoder(spec).dim  # a placeholder cloud in the encoder's space, only to embed the prompts
    base = FeatureCloud(cloud, np.zeros((len(gt), dim), np.float16), np.ones(len(gt), np.float32),
                        np.ones(len(gt), np.uint16), spec)
    texts, owner = ls.flat_prompts()
    emb = QueryEngine(base).embed(texts)
    # each point: a random prompt embedding of its GT class (any class where GT is not ASPRS), plus noise
    rng = np.random.default_rng(0)
    table = np.full(256, -1)
    table[ls.ids] = np.arange(ls.num_classes)
    cls_pos = table[gt]
    cls_pos = np.where(cls_pos >= 0, cls_pos, rng.integers(0, ls.num_classes, len(gt)))
    choice = np.array([rng.choice(np.flatnonzero(owner == c)) for c in cls_pos])
    feats = emb[choice] + rng.normal(0, 0.02, (len(gt), emb.shape[1]))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    fc = FeatureCloud(cloud, feats.astype(np.float16), np.ones(len(gt), np.float32), np.ones(len(gt), np.uint16),
                      spec)
    single = QueryEngine(fc).labels(ls.prompt_names()).labels
    ensemble = QueryEngine(fc).labels(ls).labels
    assert (single != ensemble).mean() > 0.01  # the two rules really differ here
    export_labels(tmp_path, fc, ls.vocabulary(), class_ids=list(ls.ids), las_codes="asprs",
                  result=tmp_path / "fused.npz")
    scores = {f: evaluate_files(tmp_path / f, src, "asprs")[0].to_json()
              for f in ("fused.npz", "labels.ply", "labels.las", "labels.npz")}
    assert scores["fused.npz"]["miou"] == pytest.approx(evaluate(ls.ids[ensemble], gt, ls).miou)
    assert all(s == scores["fused.npz"] for s in scores.values())


# --- 4. / 5. label identity and the input's own colour -----------------------------------------

def test_label_identity_colours_and_legend(shared_data, tmp_path):
    from PIL import Image
    from plyfile import PlyData
    src = shared_data / LAS
    cloud = io.read_cloud(src)
    ls = load_labelset("asprs")
    fc, pred = label_space(cloud, cloud.fields["classification"].astype(np.int64), ls)
    summary = export_labels(tmp_path, fc, ls.vocabulary(), las_codes="asprs", result=tmp_path / "fused.npz")
    header = FeatureCloud.load(tmp_path / "fused.npz").labelset
    assert header == read_result_header(tmp_path / "labels.ply") == read_result_header(tmp_path / "labels.las") \
        == read_result_header(tmp_path / "labels.npz")
    by_name = {c["name"]: c for c in header["classes"]}
    assert list(by_name) == ls.names == list(summary["label_counts"])
    assert by_name["ground"]["id"] == by_name["ground"]["las"] == 2
    assert by_name["low vegetation"]["prompts"] == ["grass", "low vegetation"]
    assert header["unseen"] == {"id": -1, "rgb": [60, 60, 60], "las": 1} and header["labelset"] == "asprs"
    v = PlyData.read(str(tmp_path / "labels.ply"))["vertex"].data
    colour = np.stack([v["red"], v["green"], v["blue"]], 1)   # what viewers show: the label colour
    rgb_of = {c["id"]: c["rgb"] for c in header["classes"]} | {-1: header["unseen"]["rgb"]}
    assert np.array_equal(colour, np.array([rgb_of[int(i)] for i in pred]))
    assert np.array_equal(np.stack([v["input_red"], v["input_green"], v["input_blue"]], 1), cloud.rgb)
    npz = io.read_cloud(tmp_path / "labels.npz")
    assert np.array_equal(npz.rgb, colour) and np.array_equal(npz.fields["input_green"], cloud.rgb[:, 1])
    with Image.open(tmp_path / "legend.png") as im:  # title, 13 classes, unseen: 15 rows of 22 px
        assert im.size[1] == 16 + 22 * 15
        assert (np.asarray(im.convert("RGB")) == 60).all(axis=2).any()  # the unseen swatch


# --- 6. benchmark files ------------------------------------------------------------------------

def test_query_writes_scannet_and_semantickitti_files(shared_data, tmp_path, capsys):
    d = shared_data / "scannet-scene0000-labelled"
    vert = np.load(d / "scene0000_00_vert.npy")[::8]
    nyu = np.load(d / "scene0000_00_sem_label.npy")[::8].astype(np.int64)
    sn = load_labelset("scannet20")
    from pc_ovseg.labels import remap_labels
    fc, _ = label_space(PointCloud(vert[:, :3], source="scene0000_00.ply"), remap_labels(nyu, sn), sn, noise=0)
    fc.save(tmp_path / "sn.npz")
    np.save(tmp_path / "gt.npy", nyu)
    code = cli.main(["query", str(tmp_path / "sn.npz"), "--labels", "scannet20", "--out", str(tmp_path / "q"),
                     "--format", "scannet", "--json"])
    assert code == 0 and str(tmp_path / "q" / "scene0000_00.txt") in json.loads(capsys.readouterr().out)["files"]
    ids = np.loadtxt(tmp_path / "q" / "scene0000_00.txt", dtype=np.int64)  # what ScanNet's script reads
    known = remap_labels(nyu, sn) >= 0
    assert np.array_equal(ids[known], nyu[known]) and set(np.unique(ids[~known])) == {0}
    code, out, err = run_eval(capsys, tmp_path / "q" / "scene0000_00.txt", "--gt", tmp_path / "gt.npy", "--classes",
                              "scannet20", "--remap-gt", "--remap-pred", "--json")
    assert code == 0 and json.loads(out)["miou"] == 1.0, err

    kitti = load_labelset("semantickitti19")
    xyz = np.load(shared_data / "semantickitti" / "points_000000.npy")
    gt = shared_data / "semantickitti" / "labels_000000.npy"
    fc, _ = label_space(PointCloud(xyz), np.load(gt).reshape(-1).astype(np.int64), kitti, noise=0)
    fc.save(tmp_path / "k.npz")
    code = cli.main(["query", str(tmp_path / "k.npz"), "--labels", "semantickitti19", "--out", str(tmp_path / "k"),
                     "--format", "semantickitti", "--scene", "000000"])
    assert code == 0
    capsys.readouterr()
    raw = np.fromfile(tmp_path / "k" / "000000.label", "<u4")
    assert len(raw) == len(xyz) and (raw >> 16 == 0).all() and set(np.unique(raw)) <= set(kitti.raw_map)
    assert np.array_equal(read_point_labels(tmp_path / "k" / "000000.label"), raw.astype(np.int32))
    code, out, err = run_eval(capsys, tmp_path / "k" / "000000.label", "--gt", gt, "--classes", "semantickitti19",
                              "--remap-pred", "--json")
    assert code == 0 and json.loads(out)["miou"] == 1.0, err
    code = cli.main(["query", str(tmp_path / "k.npz"), "--labels", "a,b", "--out", str(tmp_path / "x"),
                     "--format", "scannet"])
    assert code == 2 and "no raw ids" in capsys.readouterr().err and not (tmp_path / "x" / "labels.ply").exists()
