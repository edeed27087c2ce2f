"""Instance AP against cases worked by hand with the rules of ScanNet's evaluate_semantic_instance.py."""
from __future__ import annotations

import numpy as np
import pytest

from pc_ovseg.eval_instances import InstancePrediction as P
from pc_ovseg.eval_instances import evaluate_instances

N = 1000
CHAIR, TABLE = 5, 7


def scene():
    """Points 0-199 chair A, 200-399 chair B, 400-699 table, 700-999 unannotated (0)."""
    sem = np.zeros(N, np.int64)
    inst = np.zeros(N, np.int64)
    sem[:400], inst[:200], inst[200:400] = CHAIR, 1, 2
    sem[400:700], inst[400:700] = TABLE, 3
    return sem, inst


def ap(preds, **kw):
    sem, inst = scene()
    return evaluate_instances([(preds, sem, inst)], [CHAIR, TABLE], ["chair", "table"], **kw)


def r(a, b):
    return np.arange(a, b)


def test_perfect():
    res = ap([P(r(0, 200), CHAIR, 0.9), P(r(200, 400), CHAIR, 0.8), P(r(400, 700), TABLE, 0.7)])
    assert res.mean_ap == pytest.approx(1) and res.mean_ap50 == pytest.approx(1) and res.mean_ap25 == pytest.approx(1)


def test_a_duplicate_is_a_false_positive_at_the_lower_confidence():
    # both overlap chair A above every threshold: the match keeps 0.9, the 0.8 one is a FP below it
    res = ap([P(r(0, 200), CHAIR, 0.8), P(r(0, 195), CHAIR, 0.9), P(r(200, 400), CHAIR, 0.7)])
    # y by rising score: TP .7, FP .8, TP .9 -> P/R (2/3, 1), (1/2, 1/2), (1, 1/2), end (1, 0);
    # the script's steps are 1/4 each: AP = (2/3 + 1/2 + 1 + 1) / 4
    assert res.ap50[0] == pytest.approx((2 / 3 + 0.5 + 1 + 1) / 4) and res.ap[0] == pytest.approx(res.ap50[0])


def test_missed_instance_halves_recall():
    # chair A found (conf 0.5), chair B missed: P = 1 at R = 0.5 -> AP = 0.5 (worked: steps .25 + .25)
    res = ap([P(r(0, 200), CHAIR, 0.5)])
    assert res.ap50[0] == pytest.approx(0.5) and res.ap[0] == pytest.approx(0.5)


def test_class_with_gt_and_no_prediction_is_zero():
    res = ap([P(r(0, 200), CHAIR, 0.5), P(r(200, 400), CHAIR, 0.5)])
    assert res.ap50[1] == 0.0 and res.mean_ap50 == pytest.approx(0.5)


def test_a_higher_confidence_false_positive():
    # worked by hand with the script's rule: y(asc score) = [TP .8, FP .9] -> AP = 0.25
    sem, inst = scene()
    inst[200:400], sem[200:400] = 0, 0                 # only chair A in this scene
    res = evaluate_instances([([P(r(0, 200), CHAIR, 0.8), P(r(400, 600), CHAIR, 0.9)], sem, inst)],
                             [CHAIR, TABLE])
    assert res.ap50[0] == pytest.approx(0.25)


def test_predictions_on_void_are_ignored_and_small_masks_dropped():
    # a mask 80 % on unannotated points matches nothing but is not a FP at 0.5; a 50-point mask is dropped
    res = ap([P(r(0, 200), CHAIR, 0.5), P(r(200, 400), CHAIR, 0.5), P(r(400, 700), TABLE, 0.5),
              P(np.r_[r(700, 940), r(0, 60)], CHAIR, 0.99), P(r(940, 990), TABLE, 0.99)])
    assert res.ap50[0] == pytest.approx(1) and res.ap50[1] == pytest.approx(1)


def test_small_gt_is_neither_found_nor_missed():
    sem, inst = scene()
    inst[150:200] = 9                                  # a 50-point chair: not counted
    res = evaluate_instances([([P(r(0, 150), CHAIR, 0.5), P(r(200, 400), CHAIR, 0.5), P(r(400, 700), TABLE, .5)],
                               sem, inst)], [CHAIR, TABLE])
    assert res.ap50[0] == pytest.approx(1)


def test_boolean_masks_and_class_agnostic():
    sem, inst = scene()
    masks = [np.zeros(N, bool) for _ in range(3)]
    masks[0][:200] = masks[1][200:400] = masks[2][400:700] = True
    preds = [P(masks[0], TABLE, 0.9), P(masks[1], CHAIR, 0.8), P(masks[2], CHAIR, 0.7)]   # 2 wrong classes
    res = evaluate_instances([(preds, sem, inst)], [CHAIR, TABLE])
    agn = evaluate_instances([(preds, sem, inst)], [CHAIR, TABLE], class_agnostic=True)
    assert res.mean_ap50 < 1.0 and agn.mean_ap50 == pytest.approx(1.0) and agn.class_names == ["instance"]


def test_two_scenes_pool_their_detections():
    sem, inst = scene()
    one = ([P(r(0, 200), CHAIR, 0.9), P(r(200, 400), CHAIR, 0.8), P(r(400, 700), TABLE, 0.7)], sem, inst)
    two = ([P(r(0, 200), CHAIR, 0.6)], sem, inst)      # misses chair B and the table
    res = evaluate_instances([one, two], [CHAIR, TABLE])
    assert 0 < res.ap50[0] < 1 and 0 < res.ap50[1] < 1


def test_cli_on_scannet_files_from_the_real_labelled_scene(shared_data, tmp_path):
    """The benchmark's own files, written from scene0000_00's real instances: GT as label*1000+inst,
    one mask file per object (its NYU40 id): AP 1; with a third of the objects dropped, AP falls."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pc_ovseg
    from dataset_fixtures import load_labelled
    real = load_labelled(shared_data)
    sem, inst = real["sem"].astype(np.int64), real["ins"].astype(np.int64)
    np.savetxt(tmp_path / "gt.txt", np.where(inst > 0, sem * 1000 + inst, sem * 1000), fmt="%d")
    (tmp_path / "pred_mask").mkdir()
    lines = []
    for k in np.unique(inst[inst > 0]):
        m = inst == k
        np.savetxt(tmp_path / "pred_mask" / f"{k:03d}.txt", m.astype(int), fmt="%d")
        lines.append(f"pred_mask/{k:03d}.txt {int(np.bincount(sem[m]).argmax())} {1 - k / 1000:.3f}")
    (tmp_path / "pred.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "part.txt").write_text("\n".join(lines[::3]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(pc_ovseg.__file__).resolve().parents[1])}

    def run(pred, *extra):
        p = subprocess.run([sys.executable, "-m", "pc_ovseg", "eval", str(tmp_path / pred), "--gt",
                            str(tmp_path / "gt.txt"), "--instances", "--classes", "scannet20", "--json", *extra],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    full = run("pred.txt")
    assert full["ap"] == pytest.approx(1.0) and len(full["per_class"]) >= 10
    part = run("part.txt")
    assert part["ap50"] < 0.8 and run("part.txt", "--class-agnostic")["ap50"] < 0.8
    bad = subprocess.run([sys.executable, "-m", "pc_ovseg", "eval", str(tmp_path / "gt.txt"), "--gt",
                          str(tmp_path / "gt.txt"), "--instances", "--classes", "scannet20"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "gt.txt" in bad.stderr
