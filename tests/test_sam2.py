"""SAM 2 masks: random-weight SAM 2.1 models built by the sam2 package's own builders, saved,
loaded through our path, and compared with the package's SAM2ImagePredictor on real 7-Scenes views."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pc_ovseg.data import Camera, View
from pc_ovseg.errors import InputError, WeightsError
from pc_ovseg.encoders import get_mask_source, make_tiny_clip_checkpoint, make_tiny_sam_checkpoint
from pc_ovseg.encoders.sam2_masks import (SIZES, Sam2Masks, build_sam2_model, checkpoint_size, config_name,
                                          infer_size, load_sam2)

if os.environ.get("CI", "").lower() != "true":  # CI installs sam2 (.ci/run): there a missing package fails
    pytest.importorskip("sam2")
from sam2.build_sam import build_sam2  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """SAM 2.1 tiny with random weights, built by sam2's build_sam2 (config, no checkpoint), saved as
    the official files are ({"model": state dict})."""
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.manual_seed(0)
    net = build_sam2(config_name("tiny"), None, device="cpu")
    torch.save({"model": net.state_dict()}, path)
    return str(path), net


def frame_view(root, frame: int = 0, size=(160, 120)) -> View:
    """A real 7-Scenes frame as a View (one point per valid depth pixel; a stable id per pixel ray)."""
    from PIL import Image
    d = root / "7scenes-redkitchen"
    W, H = size
    rgb = np.array(Image.open(d / f"frame-{frame:06d}.color.jpg").convert("RGB").resize((W, H), Image.BILINEAR))
    depth_raw = np.array(Image.open(d / f"frame-{frame:06d}.depth.png").resize((W, H), Image.NEAREST))
    depth = np.where((depth_raw > 0) & (depth_raw < 65535), depth_raw / 1000.0, 0).astype(np.float32)
    cam = Camera(np.loadtxt(d / "camera-intrinsics.txt"), np.loadtxt(d / f"frame-{frame:06d}.pose.txt"),
                 640, 480).scaled(W, H)
    rows, cols = np.nonzero(depth > 0)
    index = np.full((H, W), -1, np.int64)
    index[rows, cols] = rows * W + cols
    return View(cam, rgb, depth, index, index[rows, cols], np.stack([rows, cols], 1).astype(np.int32),
                name=f"frame-{frame:06d}")


def test_masks_equal_the_packages_predictor(tiny_ckpt, shared_data):
    """Same weights (saved, loaded through load_sam2), same prompts: our batched decoding gives the
    predictor's logits and IoUs, and the masks kept are the predictor's best-of-3 masks."""
    path, net = tiny_ckpt
    ours = load_sam2(path, "auto", "cpu")
    assert (ours.pc_ovseg_size, ours.pc_ovseg_version) == ("tiny", "2.1")
    view = frame_view(shared_data)
    rgb = view.rgb
    from pc_ovseg.encoders.masks import prompt_points
    _, px = prompt_points(view, grid=4, max_prompts=10)
    xy = px[:, ::-1].astype(np.float64)                          # (x, y) pixels of visible 3D points
    pred = SAM2ImagePredictor(net)
    with torch.inference_mode():
        pred.set_image(rgb)
        ref_masks, ref_iou, ref_low = pred.predict(point_coords=xy[:, None], point_labels=np.ones((len(xy), 1)),
                                                   multimask_output=True, return_logits=True)
    w = Sam2Masks(ours, points_per_batch=4)                      # 3 batches (4, 4, 2) vs the predictor's one
    low, best_iou, idx, iou = w.decode(w.embed(rgb), xy, view.hw)
    np.testing.assert_allclose(iou.numpy(), ref_iou, atol=2e-5)
    best = ref_iou.argmax(1)
    ref_best = ref_low[np.arange(len(xy)), best]                   # the predictor's best-of-3 logits
    np.testing.assert_array_equal(idx.numpy(), np.arange(len(xy)))
    np.testing.assert_allclose(best_iou.numpy(), ref_iou.max(1), atol=2e-5)
    np.testing.assert_allclose(low.clamp(-32, 32).numpy(), ref_best, atol=1e-5)
    # an IoU threshold drops prompts before the upscaling; the kept ones' logits do not change
    thr = float(np.median(ref_iou.max(1)))
    low_k, iou_k, idx_k, _ = w.decode(w.embed(rgb), xy, view.hw, pred_iou_thresh=thr)
    np.testing.assert_array_equal(idx_k.numpy(), np.nonzero(best_iou.numpy() >= thr)[0])
    np.testing.assert_allclose(low_k.numpy(), low[idx_k].numpy(), atol=1e-5)
    # everything kept (no thresholds, NMS off): the kept masks are the predictor's best mask per prompt,
    # pixel for pixel wherever its logit is not within float rounding of the threshold
    kept = w.masks(rgb, xy, pred_iou_thresh=-1, stability_thresh=-1, nms_thresh=1.0)
    ref_logit = ref_masks[np.arange(len(xy)), best]
    ref_logit = ref_logit[(ref_logit > 0).reshape(len(xy), -1).any(1)]
    order = lambda m: np.lexsort(m.reshape(len(m), -1).T)  # noqa: E731 - compare as sets of masks
    assert kept.shape == ref_logit.shape
    kept, ref_logit = kept[order(kept)], ref_logit[order(ref_logit > 0)]
    sure = np.abs(ref_logit) > 1e-5
    assert (kept[sure] == (ref_logit[sure] > 0)).all() and sure.mean() > 0.999


def test_every_size_and_version_is_recognised_and_bad_files_are_one_error(tiny_ckpt, tmp_path, monkeypatch):
    linspace = torch.linspace  # Hiera reads its drop-path schedule with .item(): keep that one on the CPU
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    for version in ("2", "2.1"):
        for size in SIZES:  # shapes only: built on the meta device (no memory, no time)
            with torch.device("meta"):
                sd = build_sam2(config_name(size, version), None, device="meta").state_dict()
            assert infer_size(sd) == (size, version)
    path, _ = tiny_ckpt
    assert checkpoint_size(path) == "tiny"
    with pytest.raises(InputError, match="holds a tiny model"):
        load_sam2(path, "large")
    with pytest.raises(WeightsError, match=r"sam2\.1_hiera_tiny\.pt.*dl\.fbaipublicfiles\.com"):
        load_sam2(None)
    with pytest.raises(WeightsError, match="not found"):
        get_mask_source("sam2_3d", checkpoint=str(tmp_path / "missing.pt"))
    sam1 = make_tiny_sam_checkpoint(tmp_path / "sam1.pth")     # a SAM (v1) file is not a SAM 2 one
    with pytest.raises(InputError, match="not a SAM 2 checkpoint"):
        load_sam2(sam1)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refused"):
        load_sam2(str(tmp_path / "evil.pt"))


def test_mask_sources_on_a_real_view_at_512_input(tiny_ckpt, shared_data):
    """sam2_3d and sam2 as mask sources, the same weights at a 512 input; region maps of the view's size."""
    path, _ = tiny_ckpt
    view = frame_view(shared_data, 10)
    loose = dict(checkpoint=path, device="cpu", image_size=512, pred_iou_thresh=-1, stability_score_thresh=-1)
    src = get_mask_source("sam2_3d", grid=4, max_prompts=12, points_per_batch=8, **loose)
    assert src.sam2.image_size == 512 and src.size == "tiny"
    r3 = src(view)
    assert r3.shape == view.hw and r3.dtype == np.int32 and r3.max() >= 0
    assert set(src.last_timings) == {"encoder", "decoder", "select"}
    assert src.params["image_size"] == 512 and src.params["checkpoint"][0].endswith("sam2.1_hiera_tiny.pt")
    ra = get_mask_source("sam2", points_per_side=3, **loose)(view)
    assert ra.shape == view.hw and ra.max() >= 0


def test_cli_options_and_auto_masks(tiny_ckpt, tmp_path):
    from pc_ovseg.config import EncoderConfig
    path, _ = tiny_ckpt
    cfg = EncoderConfig(sam2_checkpoint=path, device="cpu")
    assert cfg.masks == "auto" and cfg.resolved_masks() == "sam2_3d"   # tiny fits a CPU
    assert EncoderConfig(device="cpu").resolved_masks() == "superpixels"
    assert EncoderConfig(sam2_checkpoint=path, sam2_model="large", device="cpu").resolved_masks() == "superpixels"
    with pytest.raises(InputError, match="sam2-image-size"):
        EncoderConfig(sam2_image_size=64)
    spec = make_tiny_clip_checkpoint(tmp_path / "clip.pt")
    ve = EncoderConfig(clip_model=spec.split(":")[1], clip_weights=str(tmp_path / "clip.pt"), sam2_checkpoint=path,
                       sam2_image_size=256, masks="sam2", sam_points_per_side=4, device="cpu").build()
    assert ve.masks.name == "sam2" and ve.masks.points_per_side == 4 and ve.masks.image_size == 256


def test_run_7scenes_with_sam2_completes_and_resumes(shared_data, tiny_ckpt, tmp_path):
    """`pc-ovseg run` on real frames with random-weight SAM 2.1 tiny and a random ViT-B-16 CLIP
    (the real sizes; a small SAM 2 input keeps it short), then the same command again: every view reused."""
    path, _ = tiny_ckpt
    clip = tmp_path / "vitb16.pt"
    import open_clip
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None).state_dict(), clip)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pc_ovseg", "run", str(shared_data / "7scenes-redkitchen"),
           "--labels", "wall,floor,cabinet,other", "--out", str(out), "--max-views", "2", "--voxel-size", "0.08",
           "--clip-model", "ViT-B-16", "--clip-weights", str(clip), "--sam2-checkpoint", path,
           "--sam2-image-size", "256", "--device", "cpu", "--no-progress", "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = json.loads((out / "summary.json").read_text())
    assert s1["views_computed"] == s1["views"] == 2
    assert s1["masks"]["source"] == "sam2_3d" and s1["masks"]["seconds_per_view"] > 0
    assert s1["config"]["encoder"]["masks"] == "auto"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["views_cached"] == 2 and s2["views_computed"] == 0 and s2["masks"]["seconds_per_view"] is None
    assert s2["label_counts"] == s1["label_counts"]


def test_cli_without_a_sam2_checkpoint_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pc_ovseg", "run", "data/sample_room.ply", "--labels", "wall,floor",
                        "--out", str(tmp_path), "--masks", "sam2_3d", "--clip-weights", "none"],
                       capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "sam2.1_hiera_tiny.pt" in lines[0], r.stderr
