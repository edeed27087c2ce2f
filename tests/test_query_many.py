"""Queries without reloading CLIP: many queries in one call, a disk cache of text embeddings
that a hit answers without building the model, one engine for the viewer, bounded labelling."""
import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from pc_ovseg import cli
from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.encoders import base, clip, templates
from pc_ovseg.encoders.testing import make_tiny_clip_checkpoint
from pc_ovseg.errors import InputError
from pc_ovseg.labels import LabelSet
from pc_ovseg.query import QueryEngine

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The user cache in a temporary folder, and no encoder or embedding left from other tests."""
    monkeypatch.setenv("PC_OVSEG_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setattr(base, "_LOADED", OrderedDict())
    monkeypatch.setattr(templates, "_MEMORY", {})
    return tmp_path / "user-cache" / "text"


def _new_process(monkeypatch):
    """What a second `pc-ovseg query` starts with: only the disk cache, and no way to build CLIP."""
    monkeypatch.setattr(base, "_LOADED", OrderedDict())
    monkeypatch.setattr(templates, "_MEMORY", {})

    def refuse(*_, **__):
        raise AssertionError("the CLIP model was built on a cache hit")
    monkeypatch.setattr(clip.ClipEncoder, "__init__", refuse)


def _label_space_scene(tmp_path):
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.random((300, 3)) * [4, 4, 0.01], rng.random((100, 3)) * 0.4 + [1, 1, 0.1]])
    lab = np.r_[np.zeros(300, int), np.full(100, 1)]
    fc = FeatureCloud(PointCloud(xyz), np.eye(2, dtype=np.float16)[lab], np.ones(400, np.float32),
                      np.ones(400, np.uint16), "labels:floor,chair", ["floor", "chair"])
    fc.save(tmp_path / "fused.npz")
    return fc, tmp_path / "fused.npz"


@pytest.fixture
def tiny_clip_result(tmp_path):
    spec = make_tiny_clip_checkpoint(tmp_path / "tiny_clip.pt")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((600, 32)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    fc = FeatureCloud(PointCloud(rng.random((600, 3))), feats.astype(np.float16), np.ones(600, np.float32),
                      np.ones(600, np.uint16), spec)
    fc.save(tmp_path / "fused.npz")
    return fc, tmp_path / "fused.npz"


def _query(capsys, *argv):
    code = cli.main(["query", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# --- many queries in one call ------------------------------------------------------------------

def test_many_queries_in_one_call_and_from_a_file(tmp_path, capsys):
    fc, path = _label_space_scene(tmp_path)
    code, out, err = _query(capsys, path, "--text", "chair", "--text", "floor", "--text", "chair?", "--text",
                            "chair!", "--text", "floor", "--out", tmp_path / "q", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [r["query"] for r in summary["queries"]] == ["chair", "floor", "chair?", "chair!"]
    assert summary == json.loads((tmp_path / "q" / "queries.json").read_text())
    chair = summary["queries"][0]
    assert chair["points_selected"] == 100 and len(chair["objects"]) == 1
    assert chair == json.loads((tmp_path / "q" / "objects_chair.json").read_text())
    assert [r["files"][0].rsplit("/", 1)[1] for r in summary["queries"][2:]] == \
        ["heatmap_chair_.ply", "heatmap_chair__2.ply"]  # one stem, two files
    assert len(summary["files"]) == 9 and all(Path(f).is_file() for f in summary["files"])
    np.testing.assert_allclose(np.load(tmp_path / "q" / "heatmap_floor.npz")["field.score"],
                               QueryEngine(fc).heatmap("floor"), atol=1e-6)

    qfile = tmp_path / "queries.txt"
    qfile.write_text("# what to look for\nchair\n\n  floor  \n# done\n")
    code, out, err = _query(capsys, path, "--queries", qfile, "--out", tmp_path / "f", "--json")
    assert code == 0, err
    assert [r["query"] for r in json.loads(out)["queries"]] == ["chair", "floor"]

    code, out, _ = _query(capsys, path, "--text", "chair", "--out", tmp_path / "one", "--json")
    assert code == 0 and set(json.loads(out)) == {"query", "points_selected", "objects", "files"}  # as before
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == \
        ["heatmap_chair.npz", "heatmap_chair.ply", "objects_chair.json"]


def test_query_forms_are_checked(tmp_path, capsys):
    _, path = _label_space_scene(tmp_path)
    for extra in (["--labels", "chair,floor", "--text", "chair"], ["--labels", "chair", "--queries", "x.txt"],
                  ["--text", "chair", "--queries", "x.txt"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["query", str(path), *extra, "--out", str(tmp_path / "q")])
        assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    (tmp_path / "comments.txt").write_text("# nothing\n\n")
    code, _, err = _query(capsys, path, "--queries", tmp_path / "comments.txt", "--out", tmp_path / "q")
    assert code == 2 and "holds no queries" in err and err.count("\n") == 1
    code, _, err = _query(capsys, path, "--text", "chair", "--text", " ", "--out", tmp_path / "q")
    assert code == 2 and "1-500 characters" in err
    code, _, err = _query(capsys, path, "--queries", tmp_path / "missing.txt", "--out", tmp_path / "q")
    assert code == 2 and "missing.txt" in err


# --- the text-embedding cache ------------------------------------------------------------------

def test_second_engine_reads_the_disk_cache_without_building_clip(tiny_clip_result, user_cache, monkeypatch):
    fc, _ = tiny_clip_result
    texts = ["chair", "something to sit on"]
    first = QueryEngine(fc, device="cpu")
    emb, heat = first.embed(texts), first.heatmap("chair")
    labels = first.labels(texts)
    assert len(list(user_cache.glob("text-*.npy"))) == 2  # the texts; chair and the negatives
    _new_process(monkeypatch)
    again = QueryEngine(fc, device="cpu")
    np.testing.assert_array_equal(again.embed(texts), emb)
    np.testing.assert_array_equal(again.heatmap("chair"), heat)
    np.testing.assert_array_equal(again.labels(texts).labels, labels.labels)
    with pytest.raises(AssertionError, match="was built"):  # a new text needs the model
        again.heatmap("table")


def test_a_replaced_weights_file_is_another_encoder(tiny_clip_result, tmp_path, monkeypatch):
    fc, _ = tiny_clip_result
    QueryEngine(fc, device="cpu").heatmap("chair")
    weights = fc.encoder.split(":", 2)[2]
    shutil.copyfile(make_tiny_clip_checkpoint(tmp_path / "other.pt", seed=1).split(":", 2)[2], weights)
    _new_process(monkeypatch)
    with pytest.raises(AssertionError, match="was built"):
        QueryEngine(fc, device="cpu").heatmap("chair")


def test_second_cli_call_does_not_build_clip(tiny_clip_result, tmp_path, capsys, monkeypatch):
    _, path = tiny_clip_result
    argv = [path, "--text", "chair", "--text", "lamp", "--out", tmp_path / "q", "--json"]
    code, out, err = _query(capsys, *argv)
    assert code == 0, err
    first = json.loads(out)
    heat = np.load(tmp_path / "q" / "heatmap_lamp.npz")["field.score"].copy()
    _new_process(monkeypatch)
    code, out, err = _query(capsys, *argv)
    assert code == 0, err
    assert json.loads(out) == first
    np.testing.assert_array_equal(np.load(tmp_path / "q" / "heatmap_lamp.npz")["field.score"], heat)


# --- the viewer: one engine, one encoder -------------------------------------------------------

def test_viewer_loads_the_encoder_once_for_its_lifetime(tiny_clip_result, monkeypatch):
    from urllib.request import Request, urlopen

    from pc_ovseg.viewer import ViewerScene, start_server
    fc, path = tiny_clip_result
    built = []
    init = clip.ClipEncoder.__init__
    monkeypatch.setattr(clip.ClipEncoder, "__init__", lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1])
    scene = ViewerScene.from_path(path)
    scene.prepare()
    assert scene.queryable and len(built) == 1
    engine = scene.engine
    srv = start_server(scene)
    try:
        for route, body in (("heatmap", {"query": "chair"}), ("heatmap", {"query": "lamp"}),
                            ("labels", {"vocabulary": ["chair", "lamp"]}), ("pick", {"index": 3})):
            req = Request(f"{srv.url.rstrip('/')}/api/{route}", json.dumps(body).encode(),
                          {"Content-Type": "application/json"})
            with urlopen(req, timeout=60) as r:
                assert r.status == 200
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(built) == 1 and scene.engine is engine
    heat = scene.heatmap("lamp")
    _new_process(monkeypatch)  # a restarted viewer answers the texts it has seen from the disk cache
    np.testing.assert_array_equal(ViewerScene.from_path(path).heatmap("lamp"), heat)


# --- bounded labelling, linear label sets ------------------------------------------------------

def test_labels_in_point_blocks_match_one_block(tiny_clip_result):
    fc, _ = tiny_clip_result
    ls = LabelSet("t", ["chair", "table", "lamp"], {"chair": ["chair", "stool"], "lamp": ["lamp", "light"]})
    for vocab in (ls, ["chair", "table", "lamp", "sofa"]):
        whole = QueryEngine(fc, device="cpu").labels(vocab, min_similarity=0.0)
        q = QueryEngine(fc, device="cpu")
        q.label_block = 11  # two or three points per block
        blocks = q.labels(vocab, min_similarity=0.0)
        for f in ("labels", "scores", "similarity"):
            np.testing.assert_array_equal(getattr(blocks, f), getattr(whole, f))


def test_label_set_duplicates_among_thousands_of_names():
    names = [f"class {i}" for i in range(3000)]
    assert LabelSet("big", names).names == names
    with pytest.raises(InputError, match="repeats class names: class 1, class 7$"):
        LabelSet("big", [*names, "class 7", "class 1", "class 7"])
    assert LabelSet("ign", ["a", "ignore", "ignore", "b"]).names == ["a", "b"]  # ignored ids may repeat
