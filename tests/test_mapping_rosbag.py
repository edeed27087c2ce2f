"""`pc-ovseg map` on ROS 1 / ROS 2 bags written (with rosbags' writers) from real 7-Scenes frames:
the same map as the folder they came from; `pc-ovseg info` lists a bag's topics; broken bags fail
in one line naming the topic."""
from __future__ import annotations

import contextlib
import io as _io
import json

import numpy as np
import pytest

pytest.importorskip("rosbags")

from pc_ovseg import io  # noqa: E402
from pc_ovseg.cli import main  # noqa: E402
from pc_ovseg.data import FeatureCloud  # noqa: E402
from pc_ovseg.io.rosbag import open_bag  # noqa: E402

from rosbag_fixtures import rigid_frames, write_bag, write_manifest  # noqa: E402

EVERY = 10   # the bags hold every 10th frame of the 100; the folder is mapped with --every 10


@pytest.fixture(scope="module")
def kitchen(shared_data):
    return io.read_frames(shared_data / "7scenes-redkitchen")


@pytest.fixture(scope="module")
def frames(kitchen):
    return rigid_frames([kitchen[i] for i in range(0, len(kitchen), EVERY)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pc_ovseg.encoders import make_tiny_clip_checkpoint
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    spec = make_tiny_clip_checkpoint(path)
    return ["--clip-model", spec.split(":")[1], "--clip-weights", str(path)]


def _map(src, out, tiny, *extra) -> dict:
    rc = main(["map", str(src), "--out", str(out), "--keyframe-every", "5", "--keyframe-move", "0",
               "--keyframe-turn", "0", "--no-progress", "--json", *tiny, *map(str, extra)])
    assert rc == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def folder_map(shared_data, frames, tiny, tmp_path_factory):
    """The frames as a manifest of the 7-Scenes files (poses as the bags hold them: bag poses are
    quaternions, 7-Scenes' rotations are orthonormal to 2e-4 only)."""
    out = tmp_path_factory.mktemp("folder")
    _map(write_manifest(out / "frames.json", frames, shared_data / "7scenes-redkitchen"), out, tiny)
    return FeatureCloud.load(out / "map.npz")


def test_the_folder_itself_maps_alike(shared_data, folder_map, tiny, tmp_path):
    """The 7-Scenes folder (every 10th frame, its own poses) gives the same map up to the
    poses' 2e-4 rotation differences."""
    _map(shared_data / "7scenes-redkitchen", tmp_path, tiny, "--every", EVERY)
    _same_map(folder_map, FeatureCloud.load(tmp_path / "map.npz"), exact=False)


def _same_map(a: FeatureCloud, b: FeatureCloud, exact: bool = True) -> None:
    """Every voxel, position and feature agree (``exact=False``: poses that differ by 2e-4 move
    points near a voxel face to the other side and shift what the 2D masks cover)."""
    ka = {tuple(k): i for i, k in enumerate(np.floor(a.cloud.xyz / 0.05).astype(np.int64))}
    kb = np.floor(b.cloud.xyz / 0.05).astype(np.int64)
    pairs = np.array([(ka[tuple(k)], j) for j, k in enumerate(kb) if tuple(k) in ka])
    assert len(pairs) >= 0.99 * max(len(a.cloud), len(b.cloud))
    ia, ib = pairs[:, 0], pairs[:, 1]
    assert np.median(np.linalg.norm(a.cloud.xyz[ia] - b.cloud.xyz[ib], axis=1)) < 1e-3
    seen = a.seen[ia] & b.seen[ib]
    assert seen.mean() > 0.95 * a.seen[ia].mean()
    fa = a.features[ia][seen].astype(np.float32)
    fb = b.features[ib][seen].astype(np.float32)
    cos = np.einsum("ij,ij->i", fa, fb)
    print(f"voxels in both {len(pairs) / max(len(a.cloud), len(b.cloud)):.4f}, median cos {np.median(cos):.5f}, "
          f"cos > 0.99 {(cos > 0.99).mean():.4f}, same argmax {(fa.argmax(1) == fb.argmax(1)).mean():.4f}")
    if exact:
        assert len(pairs) >= 0.999 * max(len(a.cloud), len(b.cloud)) and (cos > 0.999).mean() > 0.99
    assert np.median(cos) > 0.999 and (cos > 0.99).mean() > 0.9
    assert (fa.argmax(1) == fb.argmax(1)).mean() > (0.99 if exact else 0.95)


def test_ros2_bag_with_poses_maps_like_the_folder(frames, folder_map, tiny, tmp_path):
    bag = write_bag(tmp_path / "kitchen_ros2", frames)
    summary = _map(bag, tmp_path / "out", tiny)
    assert summary["frames"] == len(frames) and summary["keyframes"] == 2
    assert summary["input_info"]["used"]["pose"] == "/camera/pose"
    _same_map(folder_map, FeatureCloud.load(tmp_path / "out" / "map.npz"))


def test_ros1_bag_with_tf_maps_like_the_folder(frames, folder_map, tiny, tmp_path):
    bag = write_bag(tmp_path / "kitchen.bag", frames, ros1=True, pose="tf")
    summary = _map(bag, tmp_path / "out", tiny)
    used = summary["input_info"]["used"]
    assert used["pose"] == "/tf" and used["camera_frame"] == "camera_optical" and used["world_frame"] == "world"
    _same_map(folder_map, FeatureCloud.load(tmp_path / "out" / "map.npz"))


def test_ros2_mcap_compressed_colour_float_depth_odometry(frames, folder_map, tiny, tmp_path):
    bag = write_bag(tmp_path / "kitchen_mcap", frames, storage="mcap", color="png", depth="32FC1", pose="odom")
    summary = _map(bag, tmp_path / "out", tiny)
    assert summary["input_info"]["used"]["color"] == "/camera/color/compressed"
    _same_map(folder_map, FeatureCloud.load(tmp_path / "out" / "map.npz"))


@pytest.mark.parametrize("kw", [dict(color="bgr8"), dict(ros1=True, depth="compressedDepth", color="png")])
def test_bag_frames_are_the_folder_frames(frames, tmp_path, kw):
    bag = open_bag(write_bag(tmp_path / ("b.bag" if kw.get("ros1") else "b"), frames[:3], **kw))
    assert len(bag) == 3
    for f, g in zip(bag.iter_frames(), frames):
        np.testing.assert_array_equal(f.color, g.color)
        np.testing.assert_allclose(f.depth, g.depth, atol=1e-6)
        np.testing.assert_allclose(f.camera.cam_to_world, g.camera.cam_to_world, atol=1e-9)
    np.testing.assert_array_equal(bag.load(2).color, frames[2].color)   # random access too
    seq = io.read_frames(bag.source)                                      # any command reads a bag
    assert len(seq) == 3 and seq.has_depth


def test_info_lists_a_bags_topics(frames, tmp_path):
    bag = write_bag(tmp_path / "b.bag", frames[:2], ros1=True, pose="tf")
    out = _io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info", str(bag)]) == 0
    text = out.getvalue()
    for t in ("/camera/depth/image_raw", "/camera/color/image_raw", "/tf_static", "depth 16UC1", "synced      2 frames"):
        assert t in text, text
    out = _io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info", str(write_bag(tmp_path / "nodepth", frames[:2], no_depth=True)), "--json"]) == 0
    d = json.loads(out.getvalue())
    assert d["type"] == "rosbag" and "no depth topic" in d["problem"]
    assert {t["topic"] for t in d["topics"]} == {"/camera/color/image_raw", "/camera/color/camera_info", "/camera/pose"}


def _fails(argv) -> str:
    err = _io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io.StringIO()):
        rc = main(argv)
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1, err.getvalue()
    return lines[0]


@pytest.mark.parametrize("kw, expect", [
    (dict(no_depth=True), "no depth topic"),
    (dict(color_offset=0.5), "/camera/color/image_raw: no message within 0.02 s"),
    (dict(color="yuv422"), "/camera/color/image_raw: unknown image encoding 'yuv422'"),
    (dict(depth_encoding="8UC1"), "/camera/depth/image_raw: unknown image encoding '8UC1'"),
    (dict(pose="tf", skip_tf_static=True), "/tf: no transform from 'camera_optical'"),
])
def test_broken_bags_fail_in_one_line_naming_the_topic(frames, tmp_path, kw, expect):
    small = [_shrink(f) for f in frames[:2]]
    bag = write_bag(tmp_path / "bad", small, **kw)
    line = _fails(["map", str(bag), "--out", str(tmp_path / "out"), "--geometry-only", "--no-progress"])
    assert expect in line, line
    assert not (tmp_path / "out").exists()


def test_invalid_poses_are_skipped_and_counted_and_topics_chosen(frames, tmp_path):
    bag = write_bag(tmp_path / "b", frames[:6], bad_pose_at=(1, 4))
    out = tmp_path / "out"
    assert main(["map", str(bag), "--out", str(out), "--geometry-only", "--no-progress",
                 "--topics", "/camera/depth/image_raw,/camera/color/camera_info,/camera/pose"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 4 and s["skipped"]["invalid_pose"] == 2
    assert s["input_info"]["used"]["color"] is None                       # colour was left out
    line = _fails(["map", str(bag), "--out", str(tmp_path / "o2"), "--geometry-only", "--topics", "/nope"])
    assert "topic /nope is not in the bag" in line


def _shrink(f):
    """A 64x48 copy of a frame (broken-bag tests need no full-size images)."""
    from pc_ovseg.data import RGBDFrame
    return RGBDFrame(f.camera.scaled(64, 48), f.color[::10, ::10].copy(), f.depth[::10, ::10].copy(), f.name)
