"""Fusion: native fp16 running mean against a float64 reference; balancing; unseen points."""
import numpy as np
import pytest

from pc_ovseg import native
from pc_ovseg.data import Camera, PointCloud, View, ViewFeatures
from pc_ovseg.fusion import FeatureFusion, FusionConfig, Visibility, fuse, view_visibility
from pc_ovseg.geometry import pool_over_segments


def _vis(name, gran, ids, w, hw=(4, 4)):
    ids = np.asarray(ids, np.int64)
    pix = np.stack([ids % hw[0], (ids // hw[0]) % hw[1]], 1).astype(np.int32)
    return Visibility(name, gran, ids, pix, np.asarray(w, np.float32), hw)


def test_native_accumulate_matches_weighted_mean():
    rng = np.random.default_rng(0)
    n, d, views = 500, 16, 7
    acc = np.zeros((n, d), np.float16)
    wsum = np.zeros(n, np.float32)
    count = np.zeros(n, np.uint16)
    num = np.zeros((n, d)); den = np.zeros(n); cnt = np.zeros(n)
    for _ in range(views):
        ids = rng.choice(n, 300, replace=False)
        f = rng.standard_normal((300, d)).astype(np.float32)
        w = rng.random(300).astype(np.float32)
        native.fuse_accumulate(acc, wsum, count, ids, f, w)
        num[ids] += w[:, None] * f; den[ids] += w; cnt[ids] += 1
    seen = den > 0
    ref = num[seen] / den[seen, None]
    np.testing.assert_allclose(acc[seen].astype(np.float64), ref, atol=5e-3)
    np.testing.assert_allclose(wsum, den, rtol=1e-5)
    assert (count == cnt).all()
    assert (acc[~seen] == 0).all()


def test_native_rejects_bad_ids_and_dtypes():
    acc = np.zeros((3, 2), np.float16)
    with pytest.raises(IndexError):
        native.fuse_accumulate(acc, np.zeros(3, np.float32), np.zeros(3, np.uint16), np.array([5]),
                               np.ones((1, 2), np.float32), np.ones(1, np.float32))
    with pytest.raises(ValueError):
        native.fuse_accumulate(acc.astype(np.float32), np.zeros(3, np.float32), np.zeros(3, np.uint16),
                               np.array([0]), np.ones((1, 2), np.float32), np.ones(1, np.float32))


def test_normalize_rows_half():
    a = np.array([[3, 4], [0, 0], [1e-3, 0]], np.float16)
    native.normalize_rows_half(a)
    np.testing.assert_allclose(a.astype(np.float32), [[0.6, 0.8], [0, 0], [1, 0]], atol=1e-3)


def test_balanced_fusion_gives_each_granularity_equal_say():
    # point 0: seen by 10 close views saying class 1 and 1 scene view saying class 0
    cloud = PointCloud(np.zeros((2, 3)))
    onehot = lambda c: ViewFeatures((4, 4), regions=np.zeros((4, 4), np.int32), region_features=np.eye(2)[[c]])  # noqa
    items = [(_vis(f"c{i}", "close", [0], [1.0]), onehot(1)) for i in range(10)]
    items.append((_vis("s", "scene", [0], [1.0]), onehot(0)))
    plain = fuse(cloud, items, 2, cfg=FusionConfig(balance="none", segments=0))
    bal = fuse(cloud, items, 2, cfg=FusionConfig(balance="granularity", balance_power=1.0, segments=0))
    half = fuse(cloud, items, 2, cfg=FusionConfig(balance="granularity", balance_power=0.5, segments=0))
    f_plain = plain.features[0].astype(np.float32)
    f_bal = bal.features[0].astype(np.float32)
    assert f_plain[1] > 5 * f_plain[0]              # close-ups dominate a plain mean
    np.testing.assert_allclose(f_bal[0], f_bal[1], atol=1e-3)  # balanced: equal say
    f_half = half.features[0].astype(np.float32)
    assert f_bal[1] / f_bal[0] < f_half[1] / f_half[0] < f_plain[1] / f_plain[0]  # sqrt: in between
    assert not plain.seen[1] and plain.view_count[1] == 0 and plain.view_count[0] == 11
    assert (bal.features[1] == 0).all()             # unseen stays unseen, no label


def test_zero_feature_pixels_do_not_vote():
    cloud = PointCloud(np.zeros((3, 3)))
    regions = np.full((4, 4), -1, np.int32)
    regions[0, 0] = 0  # only the pixel of point 0 has a region
    feats = ViewFeatures((4, 4), regions=regions, region_features=np.eye(2)[[1]])
    fc = fuse(cloud, [(_vis("v", "frame", [0, 1], [1, 1]), feats)], 2)
    assert fc.seen[0] and not fc.seen[1] and not fc.seen[2]


def test_view_visibility_weights():
    K = np.array([[100, 0, 32], [0, 100, 32], [0, 0, 1.0]])
    cam = Camera(K, np.eye(4), 64, 64)
    xyz = np.array([[0, 0, 1.0], [0.2, 0, 2.0], [0.1, 0.1, 1.0]])
    normals = np.array([[0, 0, 1.0], [0, 0, 1.0], [1.0, 0, 0]])
    cloud = PointCloud(xyz, normals=normals)
    uv, z = cam.project(xyz)
    pix = np.round(uv[:, ::-1]).astype(np.int32)
    depth = np.zeros((64, 64), np.float32)
    depth[pix[:, 0], pix[:, 1]] = z
    view = View(cam, np.zeros((64, 64, 3), np.uint8), depth, np.full((64, 64), -1), np.arange(3), pix)
    vis = view_visibility(view, cloud)
    assert vis.weights[0] > vis.weights[1]  # nearer
    assert vis.weights[0] > vis.weights[2]  # grazing angle
    vis_save = vis
    assert (vis_save.point_ids == np.arange(3)).all()


def test_visibility_roundtrip(tmp_path):
    v = _vis("a b", "mid", [1, 2, 3], [0.5, 1, 2])
    v.save(tmp_path / "v.npz")
    w = Visibility.load(tmp_path / "v.npz")
    assert w.name == "a b" and w.granularity == "mid" and w.image_hw == (4, 4)
    assert (w.point_ids == v.point_ids).all() and (w.weights == v.weights).all()


def test_fusion_memory_is_the_result():
    fusion = FeatureFusion(10_000, 512)
    assert fusion.acc.dtype == np.float16 and fusion.acc.nbytes == 10_000 * 512 * 2


def test_segment_evidence_outvotes_weak_points_but_not_strong_ones():
    from pc_ovseg.data import FeatureCloud
    n = 12
    feats = np.zeros((n, 3), np.float16)
    feats[:, 0] = 1                  # one segment, class 0 ...
    feats[3, :] = [0, 1, 0]          # ... a point one view called class 1
    feats[7, :] = [0, 0, 1]          # ... a point many views agree is class 2
    evidence = np.full(n, 4.0, np.float32)
    evidence[3], evidence[7] = 1.0, 10.0
    fc = FeatureCloud(PointCloud(np.zeros((n, 3), np.float32)), feats, np.ones(n, np.float32),
                      np.ones(n, np.uint16))
    pool_over_segments(fc, np.zeros(n, np.int64), evidence, 0.5)
    lab = fc.features.astype(np.float32).argmax(1)
    assert lab[3] == 0 and lab[7] == 2 and (lab[[0, 1, 2, 4, 5, 6, 8, 9, 10, 11]] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(fc.features.astype(np.float32), axis=1), 1, atol=1e-3)


def _plane(H: int, W: int):
    """A flat H x W grid of points, each seen at its own pixel of an H x W image."""
    yy, xx = np.divmod(np.arange(H * W), W)
    cloud = PointCloud(np.stack([xx, yy, np.zeros(H * W)], 1).astype(np.float32))
    return cloud, np.stack([yy, xx], 1).astype(np.int32)


@pytest.mark.parametrize("class_cos", [0.0, 0.8])
def test_mask_check_discounts_a_2d_mask_the_other_views_contradict(class_cos):
    """Four views call the left half class 0; a fifth view's single mask calls the whole plane
    class 1, and only it sees the right half. Its mask is caught on the left half, so the right
    half defers to the plane's other evidence instead of keeping the lone wrong vote. Also with
    CLIP-like embeddings whose classes are 0.8 cosine apart (the check scales to the contrast)."""
    from pc_ovseg.encoders import label_map_features
    emb = np.array([[1, 0, 0], [class_cos, np.sqrt(1 - class_cos ** 2), 0]], np.float32)

    def features(lm):
        vf = label_map_features(lm, 2)
        vf.region_features = emb.astype(np.float16)
        return vf

    H, W = 10, 20
    cloud, pix = _plane(H, W)
    n = H * W
    left = np.arange(n // 2)
    items = []
    for v in range(4):
        lm = np.full((H, W), -1); lm[:H // 2] = 0
        items.append((Visibility(f"v{v}", "scene", left, pix[left], np.ones(len(left), np.float32), (H, W)),
                      features(lm)))
    items.append((Visibility("v4", "scene", np.arange(n), pix, np.ones(n, np.float32), (H, W)),
                  features(np.ones((H, W), np.int64))))
    right = np.arange(n // 2, n)

    def labels(cfg):
        return (fuse(cloud, items, 3, cfg=cfg).features.astype(np.float32) @ emb.T).argmax(1)

    off, on = labels(FusionConfig(mask_check=0, weak_evidence=0)), labels(FusionConfig())
    assert (off[left] == 0).all() and (off[right] == 1).all()
    assert (on == 0).all()


def test_points_only_a_contradicted_mask_saw_stay_seen():
    """Even a mask the check all but silences leaves its points seen (coverage is about views,
    not about trust), with next to no support."""
    from pc_ovseg.encoders import label_map_features
    H, W = 4, 50
    cloud, pix = _plane(H, W)
    n = H * W
    shared = np.arange(n // 2)
    items = [(Visibility(f"v{v}", "scene", shared, pix[shared], np.ones(len(shared), np.float32), (H, W)),
              label_map_features(np.zeros((H, W), np.int64), 2)) for v in range(6)]
    items.append((Visibility("bad", "scene", np.arange(n), pix, np.ones(n, np.float32), (H, W)),
                  label_map_features(np.ones((H, W), np.int64), 2)))
    fusion = FeatureFusion(n, 2, FusionConfig(segments=0, mask_sigma=1e-6))  # as harsh as it gets
    for vis, _ in items:
        fusion.add_weights(vis)
    fusion.fuse_views(lambda: items)
    alone = np.arange(n // 2, n)
    assert (fusion.wsum[alone] > 0).all() and (fusion.support[alone] < 0.01).all()
    assert fusion.result(cloud).coverage == 1.0
