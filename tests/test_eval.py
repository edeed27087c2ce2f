"""Evaluation: label sets, metrics checked by hand, and `pc-ovseg eval` on the real samples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pc_ovseg import cli
from pc_ovseg.errors import InputError
from pc_ovseg.eval import chart_size, evaluate, evaluate_files, format_table, read_point_labels, save_bar_chart
from pc_ovseg.labels import LabelSet, list_labelsets, load_labelset, parse_classes, remap_labels


@pytest.fixture(scope="module")
def kitti(shared_data):
    return np.load(shared_data / "semantickitti" / "labels_000000.npy").reshape(-1)


def run_cli(capsys, *argv):
    code = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# --- label sets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,count,size", [
    ("scannet20", 20, 20), ("scannet200", 200, 200), ("matterport21", 21, 21), ("matterport160", 160, 160),
    ("sensaturban13", 13, 13), ("semantickitti19", 19, 20), ("asprs", 13, 19)])
def test_labelset_counts(name, count, size):
    ls = load_labelset(name)
    assert ls.num_classes == count and len(ls.class_names) == size and len(ls.names) == count
    assert len(set(ls.names)) == count
    assert ls.source and ls.citation
    assert all(ls.prompts[n] and all(isinstance(p, str) and p for p in ls.prompts[n]) for n in ls.names)
    # every non-evaluated id inside the list is spelled "ignore", and only those
    for i, n in enumerate(ls.class_names):
        assert (n == "ignore") == (i in ls.ignore_ids)


def test_labelset_contents():
    assert list_labelsets() == sorted(["scannet20", "scannet200", "matterport21", "matterport160",
                                       "sensaturban13", "semantickitti19", "asprs", "s3dis13"])
    sn = load_labelset("ScanNet-20")
    assert sn.names[:3] == ["wall", "floor", "cabinet"] and sn.names[-1] == "otherfurniture"
    assert sn.prompts["otherfurniture"] == ["other furniture", "furniture"]
    assert sn.raw_map[39] == 19 and sn.raw_map[24] == 14 and 13 not in sn.raw_map  # NYU40 ids
    s200 = load_labelset("scannet200")
    assert s200.names[:4] == ["wall", "chair", "floor", "table"] and s200.names[-1] == "mattress"
    assert s200.raw_map[1191] == 199 and s200.raw_map[2] == 1
    assert load_labelset("matterport21").names[-2:] == ["other", "ceiling"]
    assert load_labelset("matterport21").raw_map[22] == 20
    kitti = load_labelset("semantickitti19")
    assert kitti.ids.tolist() == list(range(1, 20)) and kitti.class_names[19] == "traffic-sign"
    asprs = load_labelset("asprs")
    assert asprs.ids.tolist() == [2, 3, 4, 5, 6, 9, 10, 11, 13, 14, 15, 16, 17]
    assert asprs.prompts["ground"] == ["ground", "road", "pavement"]
    assert asprs.prompts["low vegetation"] == ["grass", "low vegetation"]
    assert asprs.raw_names[7] == "low point (noise)"


def test_parse_classes_forms(tmp_path):
    assert parse_classes("SemanticKITTI-19").name == "semantickitti19"
    custom = parse_classes("wall, floor,ignore,chair")
    assert custom.names == ["wall", "floor", "chair"] and custom.ids.tolist() == [0, 1, 3]
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"name": "mine", "class_names": ["a", "b"], "prompts": {"a": ["apple"]},
                             "ignore_ids": [1]}))
    mine = parse_classes(str(p))
    assert mine.names == ["a"] and mine.prompts["a"] == ["apple"]
    t = tmp_path / "names.txt"
    t.write_text("tree\n# comment\nroad\n")
    assert parse_classes(str(t)).names == ["tree", "road"]
    assert parse_classes("chair,").names == ["chair"]  # a one-class list needs its comma
    for bad in ("nosuchset", "a,,b"):
        with pytest.raises(InputError):
            parse_classes(bad)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        parse_classes(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match="repeats"):
        LabelSet.from_names(["a", "a"])


def test_remap_labels():
    kitti = load_labelset("semantickitti19")
    raw = np.array([0, 1, 10, 252, 60, 99, 81, 300, -5, 259])
    assert remap_labels(raw, kitti).tolist() == [0, 0, 1, 1, 9, 0, 19, -1, -1, 5]
    sn = load_labelset("scannet20")
    assert remap_labels(np.array([1, 39, 13, 0, 36]), sn).tolist() == [0, 19, -1, -1, 18]
    assert remap_labels(np.array([5, 7]), {5: 2}, default=255).tolist() == [2, 255]
    assert remap_labels(np.array([2, 0, 9]), [3, 4, 5]).tolist() == [5, 3, -1]
    with pytest.raises(InputError):
        remap_labels(raw, load_labelset("asprs"))


def test_labelset_to_raw_inverts_the_raw_ids():
    """Benchmark files need ids back as raw ids; a round trip through remap_labels is the identity."""
    kitti = load_labelset("semantickitti19")
    ids = np.array([-1, 0, 1, 5, 9, 19])
    raw = kitti.to_raw(ids)
    assert raw.tolist() == [0, 0, 10, 13, 40, 81]  # the smallest raw id of each class; -1 -> 0
    assert remap_labels(raw, kitti).tolist() == [0, 0, 1, 5, 9, 19]
    sn = load_labelset("scannet20")
    assert sn.to_raw(np.array([0, 12, 19, -1])).tolist() == [1, 14, 39, 0]  # NYU40 ids
    own = LabelSet.from_dict({"name": "k", "class_names": ["a", "b"], "raw_map": {"7": 1, "3": 1},
                              "raw_inverse": {"1": 7}})
    assert own.to_raw(np.array([1])).tolist() == [7] and LabelSet.from_dict(own.to_dict()).raw_inverse == {1: 7}
    with pytest.raises(InputError, match="no raw ids"):
        load_labelset("asprs").to_raw(np.array([2]))


# --- metrics, checked by hand -------------------------------------------------------------------

GT = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1, 5])
PRED = np.array([0, 0, 1, -1, 1, 1, 0, 2, 1, 2, 0])


def test_hand_three_classes():
    r = evaluate(PRED, GT, ["a", "b", "c"])
    # a: TP 2, FP 1 (pt 6), FN 2 -> 2/5; b: TP 2, FP 2 (pts 2, 8), FN 1 -> 2/5; c: TP 1, FN 1 -> 1/2
    assert r.num_points == 9 and r.num_ignored == 2  # gt -1 and gt 5 (beyond the list) left out
    np.testing.assert_allclose(r.iou, [0.4, 0.4, 0.5])
    np.testing.assert_allclose(r.acc, [0.5, 2 / 3, 0.5])
    assert r.miou == pytest.approx(1.3 / 3) and r.macc == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert r.coverage == pytest.approx(8 / 9) and r.oacc == pytest.approx(5 / 9)
    assert r.confusion.tolist() == [[2, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert r.unpredicted.tolist() == [1, 0, 0]
    j = r.to_json()
    assert j["per_class"]["b"] == {"id": 1, "iou": 0.4, "acc": 0.666667, "support": 3, "predicted": 4,
                                   "unpredicted": 0}
    assert json.loads(json.dumps(j)) == j


def test_hand_unseen_and_ignore():
    seen = np.ones(len(GT), bool)
    seen[7] = False  # the only correct "c" is unseen: no prediction
    r = evaluate(PRED, GT, ["a", "b", "c"], seen=seen)
    np.testing.assert_allclose(r.iou, [0.4, 0.4, 0.0])
    assert r.coverage == pytest.approx(7 / 9)
    # c not evaluated: its GT points leave, predictions of c become "no prediction"
    r = evaluate(PRED, GT, ["a", "b", "c"], ignore_ids=[2])
    assert r.class_names == ["a", "b"] and r.num_points == 7
    np.testing.assert_allclose(r.iou, [2 / 5, 2 / 4])  # b: TP 2, FP 1 (pt 2), FN 1
    assert r.coverage == pytest.approx(6 / 7)
    assert evaluate(PRED, GT, ["a", "b", "ignore"]).iou.tolist() == r.iou.tolist()
    # a GT value marked by ignore_label is left out too
    r = evaluate(PRED, np.where(GT == 2, 9, GT), ["a", "b", "c"], ignore_label=9)
    assert r.num_points == 7 and np.isnan(r.iou[2])


def test_results_add_up_over_scenes():
    a = evaluate(PRED[:5], GT[:5], ["a", "b", "c"])
    b = evaluate(PRED[5:], GT[5:], ["a", "b", "c"])
    both, whole = a + b, evaluate(PRED, GT, ["a", "b", "c"])
    assert both.to_json() == whole.to_json()


def test_class_absent_from_gt_but_predicted():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    r = evaluate(pred, gt, ["a", "b", "c"])
    assert r.present.tolist() == [True, True, False]
    assert r.iou[2] == 0.0 and np.isnan(r.acc[2]) and r.predicted[2] == 1
    assert r.miou == pytest.approx((0.5 + 1.0) / 2)  # c is not in the mean
    assert r.to_json()["per_class"]["c"]["acc"] is None
    with pytest.raises(InputError, match="3 points"):
        evaluate(pred[:3], gt, ["a", "b", "c"])


def test_kitti_identity_and_corrupted(kitti):
    r = evaluate(kitti, kitti, "semantickitti19")
    assert r.miou == 1.0 and r.macc == 1.0 and r.coverage == 1.0
    assert r.num_ignored == int((kitti == 0).sum()) == 7705 and r.num_points == 82699
    assert int(r.present.sum()) == 7
    pred = kitti.copy()
    pred[kitti == 18] = 15   # pole -> vegetation (552 points)
    pred[kitti == 1] = -1    # car: no prediction (321)
    pred[kitti == 19] = 0    # traffic-sign -> "unlabeled", an ignored id: no prediction (823)
    pred[kitti == 0] = 13    # predictions on unlabeled points do not count
    r = evaluate(pred, kitti, "semantickitti19")
    veg = 16894 / (16894 + 552)
    # present: car 0, road 1, fence 1, vegetation veg, terrain 1, pole 0, traffic-sign 0
    assert r.miou == pytest.approx((3 + veg) / 7)
    assert r.macc == pytest.approx(4 / 7)
    assert r.coverage == pytest.approx(1 - (321 + 823) / 82699)
    assert r.oacc == pytest.approx((82699 - 321 - 552 - 823) / 82699)
    pc = r.to_json()["per_class"]
    assert pc["vegetation"]["iou"] == pytest.approx(veg, abs=1e-6) and pc["vegetation"]["predicted"] == 17446
    assert pc["building"]["predicted"] == 0 and pc["building"]["iou"] is None
    assert "vegetation" in format_table(r) and "bicycle" not in format_table(r)


def test_las_classification_with_asprs(shared_data):
    path = shared_data / "las" / "sample_c.las"
    gt = read_point_labels(path)  # the 'classification' field
    assert len(gt) == 14408 and set(np.unique(gt)) == {2, 3, 4, 5, 6, 11, 14, 31}
    r = evaluate(gt, gt, "asprs")
    assert r.miou == 1.0 and int(r.present.sum()) == 7
    assert r.num_ignored == 339  # code 31 is user-defined: beyond the ASPRS list
    pred = gt.copy()
    pred[gt == 3] = 2  # low vegetation (93) called ground (1368)
    r = evaluate(pred, gt, "asprs")
    pc = r.to_json()["per_class"]
    assert pc["low vegetation"]["iou"] == 0.0
    assert pc["ground"]["iou"] == pytest.approx(1368 / (1368 + 93), abs=1e-6)
    assert r.miou == pytest.approx((5 + 1368 / 1461) / 7)


def test_bar_chart(tmp_path, kitti):
    from PIL import Image
    pred = kitti.copy()
    pred[kitti == 18] = 15
    r = evaluate(pred, kitti, "semantickitti19")
    out = tmp_path / "iou.png"
    size = save_bar_chart(r, out)
    assert size == chart_size(r) == (800, 48 + 7 * 20 + 28)  # 7 classes present
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == size
        px = np.asarray(im.convert("RGB"))
    assert (px < 250).any(axis=2).mean() > 0.05  # something was drawn
    full = save_bar_chart(r, tmp_path / "all.png", only_present=False, width=640)
    assert full == (640, 48 + 19 * 20 + 28)


# --- reading and the command --------------------------------------------------------------------

def test_cli_json_kitti(tmp_path, capsys, kitti, shared_data):
    gt = shared_data / "semantickitti" / "labels_000000.npy"
    pred = kitti.copy()
    pred[kitti == 18] = 15
    np.savetxt(tmp_path / "pred.txt", pred, fmt="%d")
    code, out, _ = run_cli(capsys, tmp_path / "pred.txt", "--gt", gt, "--classes", "semantickitti19",
                           "--json", "--chart", tmp_path / "c.png")
    assert code == 0
    j = json.loads(out)
    assert out.count("\n") == 1 and {"miou", "macc", "coverage", "per_class"} <= set(j)
    assert j["miou"] == pytest.approx((5 + 16894 / 17446) / 7, abs=1e-6) and j["coverage"] == 1.0
    assert j["per_class"]["pole"]["iou"] == 0.0 and (tmp_path / "c.png").stat().st_size > 0
    code, out, _ = run_cli(capsys, gt, "--gt", gt, "--classes", "semantickitti19")
    assert code == 0 and "mIoU 1.0000" in out


def test_cli_ply_field_and_raw_label_file(tmp_path, capsys, kitti, shared_data):
    from plyfile import PlyData, PlyElement
    xyz = np.load(shared_data / "semantickitti" / "points_000000.npy")
    v = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("label", "i4")])
    v["x"], v["y"], v["z"], v["label"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], kitti
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "scan.ply"))
    # a SemanticKITTI .label file: raw ids in the lower 16 bits, instance ids above
    inv = {0: 0, 1: 10, 9: 40, 14: 51, 15: 70, 17: 72, 18: 80, 19: 81}
    raw = np.array([inv[int(k)] for k in kitti], dtype=np.uint32) | (np.uint32(7) << 16)
    raw.tofile(tmp_path / "000000.label")
    code, out, err = run_cli(capsys, tmp_path / "scan.ply", "--gt", tmp_path / "000000.label", "--remap-gt",
                             "--classes", "semantickitti19", "--json")
    assert code == 0, err
    assert json.loads(out)["miou"] == 1.0
    res, _ = evaluate_files(tmp_path / "scan.ply", tmp_path / "scan.ply", "semantickitti19",
                            pred_field="label", gt_field="label", ignore_ids=[15])
    assert "vegetation" not in res.class_names and res.miou == 1.0
    # a query's output holds positions in its vocabulary (--labels), matched to --classes by name
    vocab = "terrain,car,road,fence,vegetation,pole,traffic-sign"
    pos = np.array([-1, 1, 2, 3, 4, 0, 5, 6])[np.searchsorted([0, 1, 9, 14, 15, 17, 18, 19], kitti)]
    np.save(tmp_path / "query.npy", pos)
    code, out, err = run_cli(capsys, tmp_path / "query.npy", "--labels", vocab, "--gt", tmp_path / "scan.ply",
                             "--classes", "semantickitti19", "--json")
    assert code == 0, err
    j = json.loads(out)
    assert j["miou"] == 1.0 and j["per_class"]["terrain"]["predicted"] == 34534


def test_cli_las_and_errors(capsys, shared_data, tmp_path):
    las = shared_data / "las" / "sample_c.las"
    code, out, _ = run_cli(capsys, las, "--gt", las, "--classes", "asprs", "--gt-field", "classification",
                           "--json", "--ignore", "6")
    j = json.loads(out)
    assert code == 0 and j["miou"] == 1.0 and "building" not in j["per_class"] and j["num_points"] == 1544
    kitti = shared_data / "semantickitti" / "labels_000000.npy"
    cases = [
        ((las, "--gt", kitti, "--classes", "asprs"), "has 14408 points but the ground truth"),
        ((las, "--gt", las, "--classes", "asprs", "--gt-field", "nope"), "no field 'nope'"),
        ((las, "--gt", las), "--classes is required"),
        ((las, "--gt", tmp_path / "missing.npy", "--classes", "asprs"), "no such file"),
        ((las, "--gt", las, "--classes", "nosuchset"), "unknown label set"),
        ((las, "--gt", las, "--classes", "asprs", "--ignore", "x"), "--ignore"),
    ]
    for argv, msg in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and msg in err and err.count("\n") == 1, (argv, err)
    np.save(tmp_path / "xyz.npy", np.zeros((5, 3), np.float32))
    code, _, err = run_cli(capsys, tmp_path / "xyz.npy", "--gt", tmp_path / "xyz.npy", "--classes", "a,b")
    assert code == 2 and "one integer per point" in err and "xyz.npy" in err


def test_feature_cloud_prediction(tmp_path, capsys, kitti, shared_data):
    """A label-space FeatureCloud queried through pc_ovseg.query reproduces its labels."""
    pytest.importorskip("pc_ovseg.query")
    from pc_ovseg.data import FeatureCloud, PointCloud
    ls = load_labelset("semantickitti19")
    xyz = np.load(shared_data / "semantickitti" / "points_000000.npy")
    feats = np.zeros((len(kitti), ls.num_classes), np.float16)
    evaluated = kitti > 0
    feats[evaluated, kitti[evaluated] - 1] = 1  # one-hot over the 19 names
    fc = FeatureCloud(PointCloud(xyz), feats, evaluated.astype(np.float32), evaluated.astype(np.uint16),
                      encoder="labels", class_names=ls.names)
    fc.save(tmp_path / "fc.npz")
    gt = shared_data / "semantickitti" / "labels_000000.npy"
    res, _ = evaluate_files(tmp_path / "fc.npz", gt, "semantickitti19")
    assert res.miou == 1.0 and res.coverage == 1.0
    code = cli.main(["eval", str(tmp_path / "fc.npz"), "--gt", str(gt), "--labels", "semantickitti19", "--json"])
    j = json.loads(capsys.readouterr().out)
    assert code == 0 and j["miou"] == 1.0 and j["per_class"]["road"]["support"] == 26387


def test_prompt_vocabulary():
    sn = load_labelset("scannet20")
    assert sn.prompt_names()[19] == "other furniture" and sn.prompt_names()[0] == "wall"
    texts, owner = sn.flat_prompts()
    assert len(texts) == len(owner) == sum(len(sn.prompts[n]) for n in sn.names)
    assert [texts[i] for i in np.flatnonzero(owner == 19)] == ["other furniture", "furniture"]
    asprs = load_labelset("asprs")
    texts, owner = asprs.flat_prompts()
    assert texts[:3] == ["ground", "road", "pavement"] and asprs.ids[owner[:3]].tolist() == [2, 2, 2]


# --- the ScanNet benchmark's own rule ----------------------------------------------------------
SCANNET_VALID = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]


def _scannet_script_ious(scenes):
    """The logic of ScanNet's BenchmarkScripts/3d_evaluation/evaluate_semantic_label.py, written
    out point by point: one confusion over NYU40 ids for all scans; a GT id outside the 20 classes
    is skipped; any predicted id (valid or not) lands in its column; FN = the rest of the GT row,
    FP = the class's column over the other valid GT rows."""
    conf = np.zeros((41, 41), np.uint64)
    for gt, pred in scenes:
        for g, p in zip(gt.tolist(), pred.tolist()):
            if g not in SCANNET_VALID:
                continue
            conf[g][p] += 1
    out = []
    for c in SCANNET_VALID:
        tp = int(conf[c, c])
        fn = int(conf[c, :].sum()) - tp
        fp = int(conf[[v for v in SCANNET_VALID if v != c], c].sum())
        out.append(float("nan") if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return np.array(out)


def test_miou_equals_the_scannet_benchmark_script(shared_data):
    """Three scans of real NYU40 GT (the labelled scene0000_00, subsampled differently) with
    corrupted predictions, including NYU40 ids outside ScanNet-20 and 0 (unannotated): per-class
    IoU and mIoU over the split equal the benchmark script's to 1e-6."""
    d = shared_data / "scannet-scene0000-labelled"
    sem = np.load(d / "scene0000_00_sem_label.npy").astype(np.int64)
    ls = load_labelset("scannet20")
    rng = np.random.default_rng(3)
    scenes, total = [], None
    for k in range(3):
        gt = sem[k::7]
        pred = gt.copy()
        flip = rng.random(len(gt)) < 0.25 + 0.1 * k
        pred[flip] = rng.choice(np.arange(0, 41), flip.sum())   # any NYU40 id, valid or not, or 0
        scenes.append((gt, pred))
        r = evaluate(remap_labels(pred, ls), remap_labels(gt, ls), ls)
        total = r if total is None else total + r
    ref = _scannet_script_ious(scenes)
    ids = [ls.raw_map[c] for c in SCANNET_VALID]
    ours = total.iou[ids]
    present = total.present[ids]
    assert 10 <= present.sum() < 20 and not np.isnan(ref).any()
    assert np.abs(ours - ref).max() < 1e-6          # every class, present or only predicted
    assert abs(total.miou - float(np.mean(ref[present]))) < 1e-6
    # The one documented difference is in the mean: a class absent from the GT but predicted
    # (IoU 0 in both) is left out of our mIoU; on a full split every class is present.
    assert np.all(ref[~present] == 0)
