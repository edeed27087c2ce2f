"""Queries on label-space features: labels, relevancy heatmaps, top-k, connected objects."""
import numpy as np

from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.query import QueryEngine, label_space_embeddings


def _scene():
    # two separated "chairs" (class 2), a floor (1) and a wall (0); 20 unseen points
    rng = np.random.default_rng(0)
    floor = np.c_[rng.random((400, 2)) * 4, np.zeros(400)]
    wall = np.c_[rng.random(300) * 4, np.zeros(300), rng.random(300) * 2]
    chair1 = rng.random((100, 3)) * 0.4 + [1, 1, 0.1]
    chair2 = rng.random((100, 3)) * 0.4 + [3, 3, 0.1]
    unseen = rng.random((20, 3)) + [0, 2, 1]
    xyz = np.concatenate([floor, wall, chair1, chair2, unseen])
    lab = np.r_[np.full(400, 1), np.zeros(300, int), np.full(200, 2), np.full(20, 0)]
    names = ["wall", "floor", "chair"]
    feats = np.eye(3, dtype=np.float16)[lab]
    weight = np.ones(len(xyz), np.float32)
    weight[-20:] = 0
    feats[-20:] = 0
    fc = FeatureCloud(PointCloud(xyz), feats, weight, (weight > 0).astype(np.uint16), "labels:wall,floor,chair", names)
    return fc, lab


def test_label_space_embeddings_match_names_loosely():
    e = label_space_embeddings(["wall", "other_furniture"], ["Wall", "other furniture", "sofa"])
    assert e.tolist() == [[1, 0], [0, 1], [0, 0]]


def test_labels_heatmap_topk():
    fc, lab = _scene()
    q = QueryEngine(fc)
    res = q.labels(["chair", "wall", "floor"])
    want = np.array([1, 2, 0])[lab]
    assert (res.labels[:-20] == want[:-20]).all()
    assert (res.labels[-20:] == -1).all() and (res.scores[-20:] == 0).all()
    heat = q.heatmap("chair")
    assert heat[lab == 2][:200].min() > 0.9 and heat[:700].max() < 0.1
    top = q.topk(0, ["wall", "floor", "chair"], k=2)
    assert top[0][0] == "floor" and top[0][1] > 0.9


def test_objects_are_connected_components_with_boxes():
    fc, _ = _scene()
    objs = QueryEngine(fc).objects("chair", threshold=0.5, min_points=10)
    assert len(objs) == 2
    assert sorted(len(o.point_ids) for o in objs) == [100, 100]
    centers = sorted(((o.bbox_min + o.bbox_max) / 2)[0] for o in objs)
    np.testing.assert_allclose(centers, [1.2, 3.2], atol=0.05)


def test_unknown_text_lights_nothing():
    fc, _ = _scene()
    assert QueryEngine(fc).heatmap("fire hydrant").max() == 0
