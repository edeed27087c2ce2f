"""pc-ovseg view: HTTP API and end-to-end in headless Chromium on a result with known answers.

The result is the SemanticKITTI sample with one-hot features from its ground-truth labels (the
oracle), so "car" is a query whose right answer is exactly the car points; it carries a result
header (as `pc-ovseg run` writes one) whose colour for "car" is its own.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from pc_ovseg import io as pcio
from pc_ovseg.cli import main
from pc_ovseg.colors import UNSEEN_RGB, palette
from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.errors import InputError
from pc_ovseg.labels import LabelSet, load_labelset, remap_labels
from pc_ovseg.export import export_labels, result_header
from pc_ovseg.viewer import BrowserError, ViewerScene, start_server
from pc_ovseg.viewer.browser import headless_page, wait_ready
from pc_ovseg.viewer.server import MAX_BODY, MAX_JSON_DEPTH, STATIC_DIR, ViewerHandler

KITTI_NAMES = ["unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
               "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
               "trunk", "terrain", "pole", "traffic-sign"]
CAR = KITTI_NAMES.index("car")
CAR_RGB = [250, 0, 250]  # the header's colour for car, not the palette's


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kitti(shared_data, tmp_path_factory):
    d = shared_data / "semantickitti"
    xyz = np.load(d / "points_000000.npy")
    gt = np.load(d / "labels_000000.npy").reshape(-1).astype(np.int64)
    feats = np.eye(len(KITTI_NAMES), dtype=np.float16)[gt]
    views = (np.arange(len(xyz)) % 5).astype(np.uint16)  # a known coverage pattern, 0 = unseen
    weight = (views > 0).astype(np.float32)
    header = result_header(LabelSet.from_names(KITTI_NAMES, "kitti-test"))
    header["classes"][CAR]["rgb"] = CAR_RGB
    fc = FeatureCloud(PointCloud(xyz, origin=np.array([1000.0, 2000.0, 10.0])), feats, weight, views,
                      "labels", KITTI_NAMES, {"note": "one-hot oracle features"}, header)
    path = tmp_path_factory.mktemp("viewer") / "kitti_oracle.npz"
    fc.save(path)
    return {"path": path, "xyz": xyz, "gt": gt, "seen": weight > 0, "views": views}


@pytest.fixture(scope="module")
def server(kitti):
    scene = ViewerScene.from_path(kitti["path"])
    scene.prepare()
    srv = start_server(scene)
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv, path):
    with urllib.request.urlopen(srv.url.rstrip("/") + path, timeout=30) as r:
        return r.read(), r.headers


def post(srv, path, body, *, raw: bytes | None = None, ctype="application/json"):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


# ---- API ------------------------------------------------------------------------------------
def test_info_and_binary_cloud(server, kitti):
    info = json.loads(get(server, "/api/info")[0])
    n = len(kitti["xyz"])
    assert info["n_points"] == info["n_display"] == n
    assert info["queryable"] and info["vocabulary"] == KITTI_NAMES
    assert info["coverage_max"] == 4 and info["coverage"] == pytest.approx(kitti["seen"].mean(), abs=1e-3)
    pos, headers = get(server, "/api/positions")
    assert headers["Content-Type"] == "application/octet-stream"
    pos = np.frombuffer(pos, "<f4").reshape(-1, 3)
    world = pos.astype(np.float64) + np.array(info["centre"])
    np.testing.assert_allclose(world, kitti["xyz"].astype(np.float64) + [1000.0, 2000.0, 10.0], atol=1e-3)
    cov = np.frombuffer(get(server, "/api/coverage")[0], "<u2")
    np.testing.assert_array_equal(cov, kitti["views"])
    with pytest.raises(urllib.error.HTTPError) as exc:
        get(server, "/api/colors")  # the scan has no colour
    assert exc.value.code == 404


def test_heatmap_and_labels_are_exact_on_oracle_features(server, kitti):
    status, body, headers = post(server, "/api/heatmap", {"query": "car"})
    assert status == 200 and float(headers["X-Query-Ms"]) >= 0
    heat = np.frombuffer(body, np.uint8)
    car = (kitti["gt"] == CAR) & kitti["seen"]
    assert heat.shape == (len(kitti["xyz"]),)
    assert (heat[car] >= 250).all() and (heat[~car] == 0).all()

    status, body, headers = post(server, "/api/labels", {"vocabulary": KITTI_NAMES})
    labels = np.frombuffer(body, np.uint8)
    np.testing.assert_array_equal(labels[kitti["seen"]], kitti["gt"][kitti["seen"]])
    assert (labels[~kitti["seen"]] == 255).all()
    counts = list(map(int, headers["X-Label-Counts"].split(",")))
    assert counts == np.bincount(kitti["gt"][kitti["seen"]], minlength=len(KITTI_NAMES)).tolist()
    assert int(headers["X-Unseen-Count"]) == (~kitti["seen"]).sum()
    colors = [list(map(int, c.split(","))) for c in headers["X-Label-Colors"].split(";")]
    expected = palette(len(KITTI_NAMES)).tolist()
    expected[CAR] = CAR_RGB  # the result header's colours for its own label set
    assert colors == expected
    # another vocabulary: the export palette by position, as `pc-ovseg query --labels` writes it
    headers = post(server, "/api/labels", {"vocabulary": ["road", "car"]})[2]
    assert headers["X-Label-Colors"] == ";".join(",".join(map(str, c)) for c in palette(2).tolist())


def test_pick_gives_label_score_and_top5(server, kitti):
    pid = int(np.flatnonzero((kitti["gt"] == CAR) & kitti["seen"])[0])
    status, body, _ = post(server, "/api/pick", {"index": pid})
    d = json.loads(body)
    assert status == 200 and d["point_id"] == pid and d["label"] == "car" and d["score"] > 0.99
    assert [t["name"] for t in d["topk"]][0] == "car" and len(d["topk"]) == 5
    assert d["view_count"] == kitti["views"][pid]
    unseen = int(np.flatnonzero(~kitti["seen"])[0])
    d = json.loads(post(server, "/api/pick", {"index": unseen, "vocabulary": ["car", "road"]})[1])
    assert d["label"] is None and d["topk"] == []


@pytest.mark.parametrize("body, problem", [
    ({"query": "x" * 201}, "longer than 200"),
    ({"query": ""}, "empty"),
    ({"query": 3}, "must be a string"),
    ({"query": "car\x00"}, "control"),
    ({}, "must be a string"),
])
def test_heatmap_rejects_bad_queries(server, body, problem):
    status, out, _ = post(server, "/api/heatmap", body)
    assert status == 400 and problem in json.loads(out)["error"]


@pytest.mark.parametrize("body, problem", [
    ({"vocabulary": [f"c{i}" for i in range(65)]}, "more than 64"),
    ({"vocabulary": ["x" * 65]}, "longer than 64"),
    ({"vocabulary": "car,road"}, "list"),
    ({"vocabulary": []}, "empty"),
    ({"vocabulary": ["car", "car"]}, "duplicate"),
    ({"vocabulary": ["car", {"__class__": 1}]}, "must be a string"),
])
def test_labels_rejects_bad_vocabularies(server, body, problem):
    status, out, _ = post(server, "/api/labels", body)
    assert status == 400 and problem in json.loads(out)["error"]


def test_requests_are_bounded_and_typed(server):
    status, out, _ = post(server, "/api/heatmap", None, raw=b"{" + b" " * MAX_BODY + b"}")
    assert status == 400 and "larger than" in json.loads(out)["error"]
    assert post(server, "/api/heatmap", None, raw=b"__import__('os')")[0] == 400
    assert post(server, "/api/heatmap", None, raw=b'["car"]')[0] == 400
    assert post(server, "/api/heatmap", {"query": "car"}, ctype="text/plain")[0] == 400
    for index in (-1, 10**9, True, "3", 1.5):
        assert post(server, "/api/pick", {"index": index})[0] == 400
    assert post(server, "/api/eval", {"query": "car"})[0] == 404
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/../pc_ovseg/viewer/server.py"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            get(server, path)
        assert exc.value.code == 404
    for host in ("evil.example:80", "127.0.0.1.evil.example"):  # DNS rebinding: a foreign Host header
        req = urllib.request.Request(server.url + "api/info", headers={"Host": host})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=30)
        assert exc.value.code == 403
    page, headers = get(server, "/")
    assert b"viewer.js" in page and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    js, headers = get(server, "/static/vendor/three.module.min.js")
    assert headers["Content-Type"] == "text/javascript" and len(js) > 500_000


# ---- raw HTTP against a tiny in-process server --------------------------------------------------
@pytest.fixture
def tiny(monkeypatch):
    """A plain 300k-point cloud: its 3.6 MB of positions outlast the socket buffers of a client
    that hangs up. A short handler timeout; ``server_close()`` joins every connection's thread."""
    monkeypatch.setattr(ViewerHandler, "timeout", 0.5)
    xyz = np.random.default_rng(0).random((300_000, 3), dtype=np.float32)
    srv = start_server(ViewerScene(PointCloud(xyz)))
    yield srv
    srv.shutdown()
    srv.server_close()


def connect(srv) -> socket.socket:
    return socket.create_connection(srv.server_address[:2], timeout=30)


def exchange(srv, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read until the server closes: (status, body)."""
    with connect(srv) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        data = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_deep_json_is_refused_before_parsing(tiny):
    assert MAX_JSON_DEPTH == 32
    for body in (b"[" * 10_000, b'{"query": ' + b"[" * 32 + b"]" * 32 + b"}"):
        status, out, _ = post(tiny, "/api/heatmap", None, raw=body)
        assert status == 400 and b"\n" not in out and "nested deeper than 32" in json.loads(out)["error"]
    assert post(tiny, "/api/heatmap", None, raw=b"[" * 100_000)[0] == 400  # the size limit still holds
    # brackets inside strings (escaped quotes too) are text, and 32 levels are fine: the parsed
    # body reaches the scene, which has no features (409)
    for body in (b'{"query": "' + b"[" * 100 + b'"}', b'{"query": "a\\"[[[[\\\\", "x": [' + b"{}, " * 49 + b"{}]}",
                 b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}"):
        assert post(tiny, "/api/heatmap", None, raw=body)[0] == 409, body


@pytest.mark.parametrize("request_, problem", [
    (b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", b"Host"),
    (b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n", b"Host"),
    (b"GET http://evil.example/api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"path"),
    (b"GET http://127.0.0.1/api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"path"),
    (b"POST http://127.0.0.1/api/heatmap HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\n\r\n{}", b"path"),
    (b"POST /api/heatmap HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}", b"Content-Length"),
    (b"POST /api/heatmap HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", b"Transfer-Encoding"),
])
def test_ambiguous_requests_are_400(tiny, request_, problem):
    status, body = exchange(tiny, request_)
    assert status == 400 and problem in json.loads(body)["error"].encode()
    assert exchange(tiny, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200


def test_idle_and_vanishing_clients_are_dropped_quietly(tiny, capfd):
    for sent in (b"", b"GET /api/info HT"):  # idle, and a half-sent request line: closed by the server
        with connect(tiny) as s:
            s.sendall(sent)
            assert s.recv(1) == b""  # EOF, well before the client's own 30 s timeout
    get_ = b"GET /api/positions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    post_ = (b"POST /api/heatmap HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"query\"")
    for request_ in (get_, get_ * 3, post_):
        for read in (0, 1000):  # hang up (RST) at once, or after the first bytes of the answer
            with connect(tiny) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(request_)
                if read:
                    s.recv(read)
    assert exchange(tiny, get_)[0] == 200  # still serving
    tiny.shutdown()
    tiny.server_close()  # joins the connections' threads: whatever they print is printed now
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err and "timed out" not in err, err


def test_decimated_display_keeps_queries_on_all_points(kitti):
    scene = ViewerScene.from_path(kitti["path"], max_display_points=10_000)
    ids = scene.display_ids
    assert len(ids) == 10_000 and (np.diff(ids) > 0).all()
    srv = start_server(scene)
    try:
        assert json.loads(get(srv, "/api/info")[0])["n_display"] == 10_000
        np.testing.assert_array_equal(np.frombuffer(get(srv, "/api/display_ids")[0], "<u4"), ids)
        assert len(get(srv, "/api/positions")[0]) == 10_000 * 12
        heat = np.frombuffer(post(srv, "/api/heatmap", {"query": "car"})[1], np.uint8)
        full = scene.engine.heatmap("car")
        np.testing.assert_array_equal(heat, np.round(full[ids] * 255).astype(np.uint8))
        d = json.loads(post(srv, "/api/pick", {"index": 5})[1])
        assert d["point_id"] == ids[5]
    finally:
        srv.shutdown()
        srv.server_close()


def test_plain_cloud_has_colour_modes_only(shared_data):
    path = shared_data / "scannet-scene0000" / "scene0000_00.bin"
    raw = np.fromfile(path, np.float32).reshape(-1, 6)
    scene = ViewerScene.from_path(path, layout="xyzrgb")
    srv = start_server(scene)
    try:
        info = json.loads(get(srv, "/api/info")[0])
        assert not info["queryable"] and "no features" in info["message"] and info["has_rgb"]
        assert info["title"] == "scene0000_00.bin" and info["coverage_max"] is None
        rgb = np.frombuffer(get(srv, "/api/colors")[0], np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(rgb, raw[:, 3:].astype(np.uint8))
        assert post(srv, "/api/heatmap", {"query": "chair"})[0] == 409
        assert post(srv, "/api/labels", {"vocabulary": ["chair"]})[0] == 409
        d = json.loads(post(srv, "/api/pick", {"index": 7})[1])
        np.testing.assert_allclose(d["xyz"], raw[7, :3], atol=1e-3)
        assert d["rgb"] == raw[7, 3:].astype(np.uint8).tolist() and "label" not in d
    finally:
        srv.shutdown()
        srv.server_close()


def test_result_without_text_encoder_weights_stays_viewable(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((500, 512)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    fc = FeatureCloud(PointCloud(rng.uniform(0, 1, (500, 3))), feats.astype(np.float16),
                      np.ones(500, np.float32), np.full(500, 3, np.uint16),
                      f"clip:ViT-B-32:{tmp_path / 'missing.pt'}")
    scene = ViewerScene.from_feature_cloud(fc)
    scene.prepare()  # no CLIP weights on this machine: queries off, with the reason
    assert not scene.queryable and "weights" in scene.message
    srv = start_server(scene)
    try:
        info = json.loads(get(srv, "/api/info")[0])
        assert not info["queryable"] and info["message"] == scene.message and info["coverage_max"] == 3
        status, out, _ = post(srv, "/api/heatmap", {"query": "chair"})
        assert status == 409 and "weights" in json.loads(out)["error"]
        d = json.loads(post(srv, "/api/pick", {"index": 3})[1])
        assert d["view_count"] == 3 and "weights" in d["note"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_plain_cloud_label_field_gives_the_label_view(shared_data):
    scene = ViewerScene.from_path(shared_data / "las" / "sample_c.las")
    cls = scene.cloud.fields["classification"]
    srv = start_server(scene)
    try:
        names = json.loads(get(srv, "/api/info")[0])["field_labels"]
        assert names == [f"classification {c}" for c in np.unique(cls)]
        lab = np.frombuffer(get(srv, "/api/field_labels")[0], np.uint8)
        np.testing.assert_array_equal(np.unique(cls)[lab], cls)
    finally:
        srv.shutdown()
        srv.server_close()


# ---- up axis -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kitchen(shared_data):
    """A cloud from 5 frames of the 7-Scenes kitchen: in its first camera's frame (y down, tilted)."""
    from pc_ovseg.views import cloud_from_frames
    return cloud_from_frames(pcio.read_frames(shared_data / "7scenes-redkitchen"), max_frames=5, progress=False)


def angle(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_up_of_an_rgbd_cloud_comes_from_its_camera_poses(kitchen):
    up, source = ViewerScene(kitchen).up_axis
    assert source == "camera poses" and angle(up, [0, -1, 0]) < 40  # y-ish, y down (OpenCV poses)
    # the shape alone agrees: the floor and worktops are the planes most normals share
    geo, source = ViewerScene(PointCloud(kitchen.xyz, kitchen.rgb)).up_axis
    assert source == "geometry" and angle(up, geo) < 8
    # the mean camera up is not it: the first camera looked down, so its -y is tilted
    assert angle(up, [0, -1, 0]) > 15


@pytest.mark.parametrize("rel", ["scannet-scene0000-labelled/scene0000_00_vert.npy", "las/sample_c.las",
                                 "las/autzen_trim.las", "semantickitti/points_000000.npy"])
def test_up_of_scans_is_z_from_geometry(shared_data, rel):
    path = shared_data / rel
    scene = ViewerScene.from_path(path, layout="xyzrgb" if "scannet" in rel else None)
    up, source = scene.up_axis
    assert source == "geometry" and up.tolist() == [0, 0, 1]


def test_up_given_and_served(kitchen):
    scene = ViewerScene(kitchen, up="-z")
    srv = start_server(scene)
    try:
        info = json.loads(get(srv, "/api/info")[0])
        assert info["up"] == [0, 0, -1] and info["up_source"] == "--up"
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(ValueError, match="up must be"):
        ViewerScene(kitchen, up="sideways")


# ---- label identity --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scannet_plys(shared_data, tmp_path_factory):
    """The labelled ScanNet vertices as two PLYs: NYU40 ids (ScanNet's own), and ScanNet-20 ids."""
    d = shared_data / "scannet-scene0000-labelled"
    v = np.load(d / "scene0000_00_vert.npy")
    nyu40 = np.load(d / "scene0000_00_sem_label.npy").astype(np.int32)
    ids = remap_labels(nyu40, load_labelset("scannet20"))  # -1: not a ScanNet-20 class
    out = tmp_path_factory.mktemp("scannet")
    for name, lab in (("nyu40", nyu40), ("scannet20", ids)):
        pcio.write(out / f"{name}.ply", PointCloud(v[:, :3], v[:, 3:].astype(np.uint8), fields={"label": lab}))
    return {"dir": out, "ids": ids}


def test_labels_option_names_a_plain_clouds_label_field(scannet_plys):
    ls = load_labelset("scannet20")
    ids = scannet_plys["ids"]
    plain = ViewerScene.from_path(scannet_plys["dir"] / "scannet20.ply")
    assert plain.field_legend["names"][:3] == ["label -1", "label 0", "label 1"]
    named = ViewerScene.from_path(scannet_plys["dir"] / "scannet20.ply", labelset=ls)
    raw = ViewerScene.from_path(scannet_plys["dir"] / "nyu40.ply", labelset=ls, remap=True)
    for scene in (named, raw):
        legend = scene.field_legend
        assert legend["names"] == ls.names and legend["colors"] == palette(20).tolist()
        assert legend["counts"] == np.bincount(ids[ids >= 0], minlength=20).tolist()
        assert legend["none"] == "not a scannet20 class" and legend["none_count"] == (ids < 0).sum()
        np.testing.assert_array_equal(scene.field_labels(), np.where(ids >= 0, ids, 255))
    table = int(np.flatnonzero(ids == ls.names.index("table"))[0])
    assert named.describe_point(table, [])["label"] == 6 and named.describe_point(table, [])["class"] == "table"
    assert raw.describe_point(table, [])["label"] == 7 and raw.describe_point(table, [])["class"] == "table"


def test_an_export_shows_its_declared_prediction_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    n, names = 3000, ["floor", "wall", "chair"]
    truth = rng.integers(0, 3, n)
    weight = (np.arange(n) % 7 > 0).astype(np.float32)
    cloud = PointCloud(rng.random((n, 3)), fields={"label": np.full(n, 9, np.int32)})  # an input field named label
    fc = FeatureCloud(cloud, np.eye(3, dtype=np.float16)[truth], weight, (weight > 0).astype(np.uint16), "labels", names)
    export_labels(tmp_path, fc, LabelSet.from_names(names, "room"), formats=("ply", "las"))
    header = result_header(LabelSet.from_names(names, "room"))
    for path in (tmp_path / "labels.ply", tmp_path / "labels.las"):
        scene = ViewerScene.from_path(path)
        legend = scene.field_legend
        assert scene.label_field == "label" and legend["names"] == names, path
        assert legend["colors"] == [c["rgb"] for c in header["classes"]]
        assert legend["none"] == "unseen" and legend["none_count"] == (weight == 0).sum()
        seen = weight > 0
        np.testing.assert_array_equal(scene.field_labels()[seen], truth[seen])
    with pytest.raises(InputError, match="declares its classes"):
        ViewerScene.from_path(tmp_path / "labels.ply", labelset=load_labelset("scannet20"))


def test_cli_view_label_options(scannet_plys, capsys):
    ply = str(scannet_plys["dir"] / "nyu40.ply")
    assert main(["view", ply, "--remap", "--no-browser"]) == 2
    assert "--remap needs --labels" in capsys.readouterr().err
    assert main(["view", ply, "--labels", "nosuchset", "--no-browser"]) == 2
    assert "nosuchset" in capsys.readouterr().err


# ---- timing ----------------------------------------------------------------------------------------
def test_server_time_counts_the_whole_answer(kitti, monkeypatch):
    scene = ViewerScene.from_path(kitti["path"])
    slow = scene.heatmap
    monkeypatch.setattr(scene, "heatmap", lambda text: (time.sleep(0.2), slow(text))[1])
    srv = start_server(scene)
    try:
        t0 = time.perf_counter()
        status, _, headers = post(srv, "/api/heatmap", {"query": "car"})
        total = (time.perf_counter() - t0) * 1e3
        assert status == 200 and 200 <= float(headers["X-Query-Ms"]) <= total
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_refuses_non_loopback_hosts_and_bad_files(kitti, tmp_path, capsys):
    assert main(["view", str(kitti["path"]), "--host", "0.0.0.0", "--no-browser"]) == 2
    assert "loopback" in capsys.readouterr().err
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    assert main(["view", str(bad), "--no-browser"]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing.npz"), "--no-browser"]) == 2


def test_cli_serves_on_a_free_loopback_port_until_interrupted(kitti):
    proc = subprocess.Popen([sys.executable, "-m", "pc_ovseg", "view", str(kitti["path"]), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and f"{len(kitti['xyz']):,} points" in line
        with urllib.request.urlopen(url + "api/info", timeout=30) as r:
            assert json.loads(r.read())["n_points"] == len(kitti["xyz"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close(); proc.stderr.close()


def test_static_assets_are_package_data():
    names = {p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert {"index.html", "viewer.js", "viewer.css", "vendor/three.module.min.js", "vendor/LICENSE.three"} <= names
    js = (STATIC_DIR / "viewer.js").read_text()
    assert 'from "./vendor/three.module.min.js"' in js  # nothing fetched from a CDN
    assert "http://" not in js and "https://" not in js


# ---- headless Chromium ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def page():
    try:
        with headless_page() as pg:
            yield pg
    except BrowserError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"headless Chromium is required in CI: {err}")
        pytest.skip(str(err))


def canvas_pixels(page) -> np.ndarray:
    from PIL import Image
    url = page.evaluate("() => { window.pcViewer.renderNow(); return window.pcViewer.canvas.toDataURL('image/png'); }")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


PROJECT_B64 = """() => {
  const u = new Uint8Array(window.pcViewer.project().buffer); let s = "";
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
  return btoa(s);
}"""


def project(page) -> np.ndarray:
    """(M, 3) screen x, y (CSS pixels) and depth of every displayed point, as the page computes them."""
    return np.frombuffer(base64.b64decode(page.evaluate(PROJECT_B64)), "<f4").reshape(-1, 3).astype(np.float64)


def pixels_at_points(page, img) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) rendered colour at each displayed point's projection, and a mask of those on screen."""
    proj = project(page)
    h, w, _ = img.shape
    x, y = np.floor(proj[:, 0]).astype(int), np.floor(proj[:, 1]).astype(int)
    on = (proj[:, 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    colour = np.zeros((len(proj), 3), np.int32)
    colour[on] = img[y[on], x[on]]
    return colour, on


def test_browser_query_heatmap_labels_click_and_screenshot(page, server, kitti, tmp_path):
    errors = []  # page errors, console errors and CSP violations all land here
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.goto(server.url + "?size=3", wait_until="load")
    wait_ready(page)
    assert page.evaluate("() => window.pcViewer.renderer.getContext().isContextLost()") is False

    # type a query (no Enter: the box sends it when typing pauses): car points turn hot, the rest stay grey
    page.locator("#query").press_sequentially("car", delay=40)
    page.wait_for_function("() => pcViewer.state.heatQuery === 'car' && pcViewer.pending === 0 && pcViewer.state.mode === 'heatmap'")
    img = canvas_pixels(page)
    colour, on = pixels_at_points(page, img)
    hot = (colour[:, 0] > 150) & (colour[:, 2] < 100) & (colour[:, 0] - colour[:, 2] > 100)
    car = (kitti["gt"] == CAR) & kitti["seen"]
    assert on[car].sum() > 100, "too few car points on screen to judge"
    assert hot[car & on].mean() > 0.6
    assert hot[~car & on].mean() < 0.02
    assert "car" in page.inner_text("#legend")

    # label view over the full vocabulary: pixels take their class's legend colour
    page.fill("#vocabulary", ", ".join(KITTI_NAMES))
    page.click("#apply-vocab")
    page.wait_for_function("() => pcViewer.state.mode === 'label' && pcViewer.pending === 0 && pcViewer.legend.length === 21")
    legend = page.evaluate("() => pcViewer.legend.map(e => e.color)")
    names = page.evaluate("() => pcViewer.legend.map(e => e.name)")
    assert names == KITTI_NAMES + ["unseen"] and legend[CAR] == CAR_RGB and legend[-1] == UNSEEN_RGB.tolist()
    img = canvas_pixels(page)
    colour, on = pixels_at_points(page, img)
    for name in ("car", "road", "vegetation", "terrain"):
        k = KITTI_NAMES.index(name)
        members = (kitti["gt"] == k) & kitti["seen"] & on
        match = (np.abs(colour[members] - np.array(legend[k])).max(1) <= 2).mean()
        assert match > 0.7, f"{name}: only {match:.0%} of its points drawn in its legend colour"
    assert "terrain" in page.inner_text("#legend")

    # click a car point whose neighbourhood is all car-coloured: the panel shows car and a top-5
    proj = project(page)
    car_rgb = np.array(legend[CAR])
    target = None
    for i in np.flatnonzero(car & on):
        x, y = int(proj[i, 0]), int(proj[i, 1])
        patch = img[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5].reshape(-1, 3).astype(int)
        drawn = (patch != img[0, 0]).any(1)  # ignore background pixels
        if drawn.sum() >= 9 and (np.abs(patch[drawn] - car_rgb).max(1) <= 2).all() and x > 300:
            target = (proj[i, 0], proj[i, 1])
            break
    assert target is not None
    page.mouse.click(*target)
    page.wait_for_function("() => pcViewer.lastPick !== null && pcViewer.pending === 0")
    assert page.inner_text("#pick .pick-label") == "car"
    rows = page.locator("#pick table.topk tr")
    assert rows.count() == 5 and "car" in rows.nth(0).inner_text()

    # coverage mode and the screenshot button (canvas.toDataURL download)
    page.select_option("#mode", "coverage")
    with page.expect_download() as dl:
        page.click("#screenshot")
    shot = tmp_path / "button.png"
    dl.value.save_as(shot)
    from PIL import Image
    im = np.asarray(Image.open(shot).convert("RGB"))
    assert im.shape[:2] == img.shape[:2] and len(np.unique(im.reshape(-1, 3), axis=0)) > 5
    assert errors == []


def test_cli_screenshot(page, kitti, tmp_path):  # `page`: skip/fail like the browser test
    from PIL import Image
    out = tmp_path / "view.png"
    # its own process: Playwright's sync API cannot nest inside the `page` fixture's session
    proc = subprocess.run([sys.executable, "-m", "pc_ovseg", "view", str(kitti["path"]), "--screenshot", str(out),
                           "--query", "car", "--point-size", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"saved {out}"
    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert im.shape == (800, 1280, 3)
    hot = (im[:, :, 0] > 150) & (im[:, :, 2] < 100) & (im[:, :, 0] - im[:, :, 2] > 100)
    assert hot[:, 300:].sum() > 50  # the car points, right of the panel


def test_browser_plain_cloud_disables_the_query_box(page, shared_data):
    scene = ViewerScene.from_path(shared_data / "scannet-scene0000" / "scene0000_00.bin", layout="xyzrgb")
    srv = start_server(scene)
    try:
        page.goto(srv.url, wait_until="load")
        wait_ready(page)
        assert page.is_disabled("#query") and page.is_disabled("#apply-vocab")
        assert "no features" in page.inner_text("#message")
        assert page.evaluate("() => document.querySelector('#mode option[value=heatmap]').disabled")
        # RGB mode draws the file's own colour bytes (no colour-space conversion); in this dense
        # room many points are hidden behind others, so compare with a shuffled assignment
        img = canvas_pixels(page)
        colour, on = pixels_at_points(page, img)
        rgb = scene.cloud.rgb.astype(int)
        assert on.mean() > 0.9
        exact = (np.abs(colour[on] - rgb[on]).max(1) <= 2).mean()
        shuffled = (np.abs(colour[on] - np.random.default_rng(0).permutation(rgb[on])).max(1) <= 2).mean()
        assert exact > 0.4 and exact > 10 * shuffled
    finally:
        srv.shutdown()
        srv.server_close()


def test_browser_orbits_about_the_datas_up_axis(page, kitchen):
    srv = start_server(ViewerScene(kitchen))
    try:
        page.goto(srv.url, wait_until="load")
        wait_ready(page)
        info = page.evaluate("() => pcViewer.info")
        assert info["up_source"] == "camera poses" and "up (" in page.inner_text("#stats")
        # the camera's up is the data's; a point above the centre is drawn above it, after orbiting too
        above = """(az) => { const v = pcViewer, c = v.camera, o = v.orbit;
          o.azimuth = az; o.update(); c.updateMatrixWorld();  // one synchronous step: nothing interleaves
          const a = o.target.clone().project(c), b = o.target.clone().addScaledVector(o.upAxis, c.position.distanceTo(o.target) * 0.05).project(c);
          return [c.up.toArray(), b.y - a.y, Math.abs(b.x - a.x)]; }"""
        for azimuth in (0.0, 2.0, 4.0):
            cam_up, dy, dx = page.evaluate(above, azimuth)
            np.testing.assert_allclose(cam_up, info["up"], atol=1e-4)
            assert dy > 0 and dx < 1e-3  # straight up on screen: the view is upright
    finally:
        srv.shutdown()
        srv.server_close()


TIMING_TEXT = "async (t) => (await import('/static/viewer.js')).timingText(t)"


def test_browser_timing_line_contains_the_server_time(page, kitti, monkeypatch):
    scene = ViewerScene.from_path(kitti["path"])
    slow = scene.heatmap
    monkeypatch.setattr(scene, "heatmap", lambda text: (time.sleep(0.3), slow(text))[1])
    srv = start_server(scene)
    try:
        page.goto(srv.url, wait_until="load")
        wait_ready(page)
        assert page.evaluate(TIMING_TEXT, {"server": 2243.4, "total": 2250.2}) == "2243 ms on the server, 2250 ms in all"
        assert page.evaluate(TIMING_TEXT, {"server": None, "total": 12.0}) == "12 ms in all"
        page.fill("#query", "car")
        page.press("#query", "Enter")
        page.wait_for_function("() => pcViewer.state.heatQuery === 'car' && pcViewer.pending === 0")
        server_ms, total_ms = map(float, re.match(r"(\d+) ms on the server, (\d+) ms in all",
                                                  page.inner_text("#legend .timing")).groups())
        assert 300 <= server_ms <= total_ms
    finally:
        srv.shutdown()
        srv.server_close()


def test_browser_plain_cloud_label_field_reads_as_classes(page, scannet_plys):
    ls = load_labelset("scannet20")
    scene = ViewerScene.from_path(scannet_plys["dir"] / "nyu40.ply", labelset=ls, remap=True)
    srv = start_server(scene)
    try:
        page.goto(srv.url + "?mode=label", wait_until="load")
        wait_ready(page)
        legend = page.evaluate("() => pcViewer.legend")
        assert [e["name"] for e in legend] == ls.names + ["not a scannet20 class"]
        assert legend[-1]["color"] == UNSEEN_RGB.tolist() and "table" in page.inner_text("#legend")
        img = canvas_pixels(page)
        colour, on = pixels_at_points(page, img)
        ids = scannet_plys["ids"]
        for k, rgb in ((ls.names.index("floor"), palette(20)[1]), (ls.names.index("wall"), palette(20)[0]), (-1, UNSEEN_RGB)):
            members = (ids == k) & on
            assert (np.abs(colour[members] - rgb).max(1) <= 2).mean() > 0.4, k
    finally:
        srv.shutdown()
        srv.server_close()
