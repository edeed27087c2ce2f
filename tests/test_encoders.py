"""Encoders: tiny random CLIP/SAM checkpoints loaded through the public path, on real 7-Scenes views."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from pc_ovseg.data import Camera, View, ViewFeatures, _bilinear
from pc_ovseg.errors import InputError, WeightsError
from pc_ovseg.encoders import (
    ClipEncoder, LabelEncoder, PrecomputedFeatures, PrecomputedLabels, ViewEncoder,
    encode_text_with_templates, get_encoder, get_mask_source, label_map_features,
    make_tiny_clip_checkpoint, make_tiny_sam_checkpoint, pool_regions, prompt_points, slic)
from pc_ovseg.encoders.sam import SAM_ARCHS, infer_arch, load_sam
from pc_ovseg.encoders.view_encoder import mask_crops

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def clip_spec(ckpt_dir):
    return make_tiny_clip_checkpoint(ckpt_dir / "tiny_clip.pt")


@pytest.fixture(scope="module")
def clip(clip_spec):
    return get_encoder(clip_spec, device="cpu")


@pytest.fixture(scope="module")
def sam_ckpt(ckpt_dir):
    return make_tiny_sam_checkpoint(ckpt_dir / "tiny_sam.pth")


def seven_scenes_view(root, frame: int = 0, size=(160, 120)) -> View:
    """A real RGB-D frame as a View: depth back-projected to points, one point per valid pixel."""
    from PIL import Image
    d = root / "7scenes-redkitchen"
    W, H = size
    rgb = np.array(Image.open(d / f"frame-{frame:06d}.color.jpg").convert("RGB").resize((W, H), Image.BILINEAR))
    depth_raw = np.array(Image.open(d / f"frame-{frame:06d}.depth.png").resize((W, H), Image.NEAREST))
    depth = np.where((depth_raw > 0) & (depth_raw < 65535), depth_raw / 1000.0, 0).astype(np.float32)
    K = np.loadtxt(d / "camera-intrinsics.txt")
    cam = Camera(K, np.loadtxt(d / f"frame-{frame:06d}.pose.txt"), 640, 480).scaled(W, H)
    rows, cols = np.nonzero(depth > 0)
    index = np.full((H, W), -1, np.int64)
    index[rows, cols] = rows * W + cols     # a stable id per pixel ray, shared across frames of this size
    return View(cam, rgb, depth, index, index[rows, cols], np.stack([rows, cols], 1).astype(np.int32),
                name=f"frame-{frame:06d}")


# -- registry and label space ------------------------------------------------------------------
def test_labels_encoder_is_one_hot_and_round_trips():
    enc = get_encoder("labels:wall,floor,Office Chair")
    assert isinstance(enc, LabelEncoder) and enc.dim == 3
    t = enc.encode_text(["FLOOR", "office_chair", " office  chair ", "sofa"])
    np.testing.assert_array_equal(t, [[0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]])
    assert t.dtype == np.float32
    assert get_encoder(enc.spec).class_names == enc.class_names
    np.testing.assert_array_equal(encode_text_with_templates(enc, ["wall"]), [[1, 0, 0]])


def test_unknown_encoder_prefix_is_an_input_error():
    with pytest.raises(InputError, match="unknown encoder"):
        get_encoder("lseg:foo")


# -- CLIP ---------------------------------------------------------------------------------------
def test_tiny_clip_loads_from_file_and_encodes(clip, clip_spec):
    assert isinstance(clip, ClipEncoder) and clip.dim == 32
    assert clip.spec == clip_spec and get_encoder(clip.spec).spec == clip_spec
    assert get_encoder(clip_spec, device="cpu") is clip     # stays loaded for the next stage
    t = clip.encode_text(["a chair", "a table", "a chair"])
    assert t.shape == (3, 32) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(t[0], t[2], atol=1e-6)
    assert not np.allclose(t[0], t[1])
    # the weights really come from the file: a second load gives identical embeddings
    np.testing.assert_allclose(get_encoder(clip_spec, reuse=False).encode_text(["a chair"])[0], t[0], atol=1e-6)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (30, 50, 3), np.uint8), rng.integers(0, 255, (100, 20, 3), np.uint8)]
    c = clip.encode_crops(crops)
    assert c.shape == (2, 32) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)


def test_text_templates_are_an_ensemble_cached_in_memory_and_on_disk(clip, tmp_path, monkeypatch):
    tpl = ["a photo of a {}.", "a {} in a scene."]
    out = encode_text_with_templates(clip, ["chair", "kitchen_table"], tpl, cache_dir=tmp_path)
    single = clip.encode_text(["a photo of a kitchen table.", "a kitchen table in a scene."])
    ref = single.mean(0) / np.linalg.norm(single.mean(0))
    np.testing.assert_allclose(out[1], ref, atol=1e-5)
    assert len(list(tmp_path.glob("text-*.npy"))) == 1
    from pc_ovseg.encoders import templates
    monkeypatch.setattr(clip, "encode_text", lambda *_: pytest.fail("cache miss"))
    np.testing.assert_array_equal(encode_text_with_templates(clip, ["chair", "kitchen_table"], tpl), out)
    monkeypatch.setattr(templates, "_MEMORY", {})  # only the disk cache is left
    np.testing.assert_array_equal(encode_text_with_templates(clip, ["chair", "kitchen_table"], tpl, tmp_path), out)
    assert len(encode_text_with_templates(get_encoder("labels:a,b"), ["a"])) == 1
    assert "{}" in templates.load_templates("default")[0]


def _window(clip, image):
    return clip._to_tensor(image[None]).float()


@pytest.mark.parametrize("cls_bias", [0.0, 0.3])
def test_dense_attention_matches_hand_computation(clip, cls_bias):
    """ClearCLIP last block by hand: q-q attention, no residual, no FFN (the default), and with the
    opt-in [CLS] bias subtracted."""
    assert (clip.attention, clip.cls_bias, clip.window_stride) == ("qq", 0.0, 0.5)   # ClearCLIP's recipe
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (64, 64, 3), np.uint8)    # exactly one model-size window
    clip.cls_bias = cls_bias
    try:
        got = clip.dense_features(img)
    finally:
        clip.cls_bias = 0.0
    assert got.shape == (4, 4, 32) and got.dtype == np.float32
    v = clip.model.visual
    with torch.no_grad():
        x = v._embeds(_window(clip, img))
        for blk in v.transformer.resblocks[:-1]:
            x = blk(x)
        blk = v.transformer.resblocks[-1]
        y = torch.nn.functional.layer_norm(x, (64,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)[0]
        Wq, Wk, Wv = blk.attn.in_proj_weight.chunk(3)
        bq, bk, bv = blk.attn.in_proj_bias.chunk(3)
        heads = []
        for h in range(2):                                 # 2 heads of width 32
            s = slice(32 * h, 32 * h + 32)
            q = y @ Wq[s].T + bq[s]
            val = y @ Wv[s].T + bv[s]
            a = torch.softmax(q @ q.T / np.sqrt(32), dim=-1)
            heads.append(a @ val)
        o = torch.cat(heads, 1) @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
        f = v.ln_post(o[1:]) @ v.proj
        f = f / f.norm(dim=-1, keepdim=True)
        g = clip.model.encode_image(_window(clip, img))[0]   # the ordinary image embedding
        g = g / g.norm()
        ref = f - cls_bias * g
        ref = (ref / ref.norm(dim=-1, keepdim=True)).reshape(4, 4, 32).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unmodified_attention_mode_equals_torch_attention(clip):
    img = np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)
    old = clip.attention
    try:
        clip.attention = "qk"
        with torch.no_grad():
            x = clip._last_block_inputs(_window(clip, img))
            blk = clip.model.visual.transformer.resblocks[-1]
            y = blk.ln_1(x)
            ref = blk.attn(y, y, y, need_weights=False)[0]
            got = clip._self_attention_tokens(x, (4, 4))
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)
    finally:
        clip.attention = old


def test_sliding_windows_cover_large_images(clip, shared_data):
    view = seven_scenes_view(shared_data, size=(320, 240))
    (rh, rw), origins = clip.window_layout(240, 320)
    assert rh >= 64 and rw >= 64 and rh % 16 == 0 and rw % 16 == 0
    covered = np.zeros((rh, rw), bool)
    for y, x in origins:
        covered[y:y + 64, x:x + 64] = True
    assert covered.all() and len(origins) > 1
    d = clip.dense_features(view.rgb)
    assert d.shape == (rh // 16, rw // 16, 32)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1, atol=1e-5)
    for mode in ("csa", "naclip", "kk"):
        enc = ClipEncoder("pcovseg-tiny-ViT", clip.weights, attention=mode, short_side=128)
        dm = enc.dense_features(view.rgb)
        assert dm.shape[0] == 128 // 16 and np.isfinite(dm).all()


def test_whole_image_mode_resamples_positions(clip, shared_data):
    img = np.random.default_rng(5).integers(0, 255, (64, 64, 3), np.uint8)
    whole = ClipEncoder("pcovseg-tiny-ViT", clip.weights, windows="whole")
    x = _window(clip, img)
    with torch.no_grad():   # at the native size the resampled grid is the original one
        np.testing.assert_allclose(whole._embeds_resized(x).numpy(), clip.model.visual._embeds(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(whole.dense_features(img), clip.dense_features(img), atol=1e-5)
    view = seven_scenes_view(shared_data, size=(320, 240))
    (rh, rw), org = whole.window_layout(240, 320)
    assert org == [(0, 0)]
    assert whole.dense_features(view.rgb).shape == (rh // 16, rw // 16, 32)


def test_missing_weights_fail_fast_with_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        get_encoder("clip:ViT-B-16:openai")
    msg = str(err.value)
    assert "ViT-B-16" in msg and "'openai'" in msg and "--clip-weights /path/to/checkpoint.pt" in msg
    assert "timm/vit_base_patch16_clip_224.openai" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="no such file"):
        get_encoder(f"clip:ViT-B-16:{tmp_path}/missing.pt")
    with pytest.raises(InputError, match="known tags"):
        get_encoder("clip:ViT-B-16:no_such_tag")
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not a checkpoint"):
        get_encoder(f"clip:pcovseg-tiny-ViT:{bad}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.pt: not a checkpoint"):
        get_encoder(f"clip:pcovseg-tiny-ViT:{junk}")
    with pytest.raises(InputError, match="unknown open_clip model"):
        get_encoder("clip:ViT-Q-99:openai")


# -- masks --------------------------------------------------------------------------------------
def test_superpixels_on_a_real_frame(shared_data):
    from PIL import Image
    from scipy import ndimage
    img = np.array(Image.open(shared_data / "7scenes-redkitchen" / "frame-000000.color.jpg").convert("RGB"))
    lab = slic(img, n_segments=200)
    assert lab.shape == (480, 640) and lab.dtype == np.int32 and lab.min() == 0
    R = lab.max() + 1
    assert 100 <= R <= 300 and len(np.unique(lab)) == R
    for r in range(0, R, 25):                       # every region is one connected piece
        assert ndimage.label(lab == r)[1] == 1
    # boundary adherence: a two-colour image is never merged across the edge
    two = np.zeros((120, 160, 3), np.uint8); two[:, 80:] = (200, 30, 30)
    l2 = slic(two, n_segments=30)
    assert not set(np.unique(l2[:, :80])) & set(np.unique(l2[:, 80:]))


def test_projected_3d_segments(shared_data):
    view = seven_scenes_view(shared_data)
    seg = (np.arange(160 * 120) // 1000).astype(np.int64)     # 3D segments by id blocks
    regions = get_mask_source("segments3d", segments=seg)(view)
    assert regions.shape == view.hw
    assert (regions[view.index < 0] == -1).all()
    ids = seg[view.index[view.index >= 0]]
    assert len(np.unique(regions[view.index >= 0])) == len(np.unique(ids))


def test_pooling_equals_direct_mean_of_upsampled_features():
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(5, 7, 8)).astype(np.float32)
    regions = rng.integers(-1, 6, (40, 60)).astype(np.int32)
    got, counts = pool_regions(dense, regions)
    for r in range(6):
        px = np.argwhere(regions == r)
        np.testing.assert_allclose(got[r], _bilinear(dense, px, 40, 60).mean(0), atol=1e-5)
        assert counts[r] == len(px)


def test_sam_checkpoint_round_trip_and_mask_sources(sam_ckpt, shared_data):
    sd = torch.load(sam_ckpt, weights_only=True)
    assert infer_arch(sd) == SAM_ARCHS["tiny"]
    load_sam(sam_ckpt, "tiny")
    with pytest.raises(InputError, match="not a SAM vit_b"):
        load_sam(sam_ckpt, "vit_b")
    with pytest.raises(WeightsError, match="--sam-checkpoint"):
        get_mask_source("sam")
    view = seven_scenes_view(shared_data, size=(96, 72))
    loose = dict(checkpoint=sam_ckpt, pred_iou_thresh=-10, stability_score_thresh=-10, device="cpu")
    r3 = get_mask_source("sam3d", grid=4, max_prompts=12, points_per_batch=8, **loose)(view)
    assert r3.shape == view.hw and r3.dtype == np.int32 and r3.max() >= 0
    assert set(np.unique(r3)) <= set(range(-1, 12))
    ra = get_mask_source("sam", points_per_side=2, **loose)(view)
    assert ra.shape == view.hw and ra.dtype == np.int32


def test_prompt_points_are_bounded_and_consistent_across_views(shared_data):
    a = seven_scenes_view(shared_data, 0)
    b = seven_scenes_view(shared_data, 10)
    ida, px = prompt_points(a, grid=8, max_prompts=40)
    assert len(ida) <= 40 and len(np.unique(ida)) == len(ida)
    np.testing.assert_array_equal(a.index[px[:, 0], px[:, 1]], ida)
    # a view with a subset of the points keeps the chosen ones in cells they still win
    keep = np.isin(a.point_ids, ida) | (np.arange(len(a.point_ids)) % 2 == 0)
    sub = View(a.camera, a.rgb, a.depth, a.index, a.point_ids[keep], a.pixels[keep], name="sub")
    assert set(prompt_points(sub, grid=8, max_prompts=40)[0]) == set(ida)
    assert len(prompt_points(b, grid=16, max_prompts=1000)[0]) > 100


# -- ViewEncoder -------------------------------------------------------------------------------
def test_view_encoder_pools_dense_features_and_caches(clip, shared_data, tmp_path):
    view = seven_scenes_view(shared_data)
    enc = ViewEncoder(clip, masks="superpixels", mask_kw={"n_segments": 60}, cache_dir=tmp_path)
    vf = enc.encode(view)
    assert isinstance(vf, ViewFeatures) and vf.image_hw == view.hw and vf.dim == 32
    assert vf.dense.dtype == np.float16 and vf.dense.shape[2] == 32 and vf.dense.shape[0] < 120
    assert vf.regions.shape == view.hw and vf.region_features.shape == (vf.regions.max() + 1, 32)
    dense = clip.dense_features(view.rgb)
    r = int(vf.regions[60, 80])
    px = np.argwhere(vf.regions == r)
    direct = _bilinear(dense, px, *view.hw).mean(0)
    np.testing.assert_allclose(vf.region_features[r].astype(np.float32), direct / np.linalg.norm(direct), atol=2e-3)
    s = vf.sample(view.pixels)
    assert s.shape == (len(view.pixels), 32) and s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, atol=1e-3)
    # cache: hit in this encoder and in a fresh one with the same settings (resume)
    assert (enc.hits, enc.misses) == (0, 1) and len(list(tmp_path.glob("frame-000000-*.npz"))) == 1
    again = ViewEncoder(clip, masks="superpixels", mask_kw={"n_segments": 60}, cache_dir=tmp_path)
    vf2 = again.encode(view)
    assert (again.hits, again.misses) == (1, 0)
    np.testing.assert_array_equal(vf2.sample(view.pixels), s)
    assert vf2.meta["encoder"] == clip.spec
    # other settings or another image under the same name: a miss, not a stale hit
    other = ViewEncoder(clip, masks="superpixels", mask_kw={"n_segments": 60}, blend=0.8, cache_dir=tmp_path)
    other.encode(view)
    changed = View(view.camera, view.rgb[::-1].copy(), view.depth, view.index, view.point_ids, view.pixels, name=view.name)
    again.encode(changed)
    assert other.misses == 1 and again.misses == 1
    # a torn cache file is recomputed
    for p in tmp_path.glob("*.npz"):
        p.write_bytes(b"garbage")
    torn = ViewEncoder(clip, masks="superpixels", mask_kw={"n_segments": 60}, cache_dir=tmp_path)
    torn.encode(view)
    assert torn.misses == 1 and torn.encode(view) is not None and torn.hits == 1


def test_interrupted_loop_resumes(clip, shared_data, tmp_path):
    views = [seven_scenes_view(shared_data, f, size=(96, 72)) for f in (0, 10, 20)]
    first = ViewEncoder(clip, cache_dir=tmp_path)
    for i, (v, vf) in enumerate(first.encode_many(views, progress=False)):
        if i == 1:
            break                                   # killed after two views
    second = ViewEncoder(clip, cache_dir=tmp_path)
    out = list(second.encode_many(views, progress=False))
    assert len(out) == 3 and (second.hits, second.misses) == (2, 1)


def test_crop_features_and_no_masks(clip, shared_data):
    view = seven_scenes_view(shared_data, size=(96, 72))
    regions = slic(view.rgb, n_segments=12)
    crops = mask_crops(view.rgb, regions == 0, levels=3)
    assert len(crops) == 3 and crops[0].size <= crops[1].size <= crops[2].size
    vf = ViewEncoder(clip, mask_kw={"n_segments": 12}, mask_features="crops", max_crops=4).encode(view)
    rf = vf.region_features.astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(rf, axis=1), 1, atol=2e-3)
    area = np.bincount(vf.regions[vf.regions >= 0])
    top = np.argsort(-area, kind="stable")[0]
    emb = clip.encode_crops(mask_crops(view.rgb, vf.regions == top, 3)).mean(0)
    np.testing.assert_allclose(rf[top], emb / np.linalg.norm(emb), atol=2e-3)
    nomask = ViewEncoder(clip, masks="none").encode(view)
    assert nomask.regions is None and nomask.sample(view.pixels).shape == (len(view.pixels), 32)


# -- precomputed 2D inputs ----------------------------------------------------------------------
def test_precomputed_feature_maps(shared_data, tmp_path):
    view = seven_scenes_view(shared_data, size=(96, 72))
    fmap = np.random.default_rng(4).normal(size=(9, 12, 16)).astype(np.float32)
    np.save(tmp_path / f"{view.name}.npy", fmap)
    vf = PrecomputedFeatures(tmp_path).encode(view)
    assert vf.dense.shape == (9, 12, 16) and vf.sample(view.pixels).shape == (len(view.pixels), 16)
    vf2 = PrecomputedFeatures({view.name: fmap}).encode(view)
    np.testing.assert_array_equal(vf.dense, vf2.dense)
    with pytest.raises(InputError, match="no feature map"):
        PrecomputedFeatures(tmp_path).encode(View(view.camera, view.rgb, view.depth, view.index,
                                                  view.point_ids, view.pixels, name="other"))


def test_label_maps_become_label_space_features(shared_data, tmp_path):
    from PIL import Image
    lm = np.array([[0, 1, -1], [2, 5, 1]])
    vf = label_map_features(lm, 3)
    s = vf.sample(np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]))
    np.testing.assert_array_equal(s, [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]])
    view = seven_scenes_view(shared_data, size=(96, 72))
    half = np.zeros((36, 48), np.uint8); half[:, 24:] = 1; half[0, 0] = 255
    Image.fromarray(half).save(tmp_path / f"{view.name}.png")
    labels = PrecomputedLabels(tmp_path, ["floor", "wall"], ignore_index=255)
    out = labels.encode(view)
    assert out.regions.shape == view.hw and out.regions[0, 0] == -1
    sample = out.sample(view.pixels)
    text = labels.encoder.encode_text(["wall"])[0]
    right = view.pixels[:, 1] >= 48
    assert (sample[right] @ text == 1).all() and (sample[~right] @ text == 0).all()


def _encoder_config(*flags):
    from pc_ovseg.cli import build_parser, run_config
    return run_config(build_parser("fuse").parse_args(["fuse", "in.ply", "--out", "o", *flags])).encoder


def test_cli_options_build_the_view_encoder(clip_spec):
    weights = clip_spec.split(":", 2)[2]
    cfg = _encoder_config("--clip-model", "pcovseg-tiny-ViT", "--clip-weights", weights, "--device", "cpu")
    assert (cfg.clip_model, cfg.masks, cfg.sam_model) == ("pcovseg-tiny-ViT", "auto", "auto")
    enc = cfg.build_encoder()
    assert enc.spec == clip_spec
    ve = cfg.build(encoder=enc)
    assert ve.masks.name == "superpixels" and ve.cache_dir is None  # the run's cache is the one feature store
    d = _encoder_config()
    assert (d.clip_model, d.clip_weights) == ("ViT-B-16", "openai")


def test_cli_sam_options(clip, sam_ckpt):
    cfg = _encoder_config("--masks", "sam3d", "--sam-checkpoint", sam_ckpt, "--sam-pred-iou-thresh", "0.5",
                          "--device", "cpu")
    ve = cfg.build(encoder=clip)
    assert ve.masks.name == "sam3d" and ve.masks.pred_iou_thresh == 0.5 and ve.masks.model == "auto"
    with pytest.raises(WeightsError, match="--sam-checkpoint"):
        _encoder_config("--masks", "sam").build(encoder=clip)
