"""City-scale runs: tiles with halos over a city block of real airborne LiDAR (copies of PDAL's
classified sample_c.las, written as one georeferenced LAS), fused with oracle 2D labels."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pc_ovseg
import pc_ovseg.tiles as tiles
from city_fixture import write_city
from pc_ovseg.config import RunConfig
from pc_ovseg.errors import InputError
from pc_ovseg.labels import load_labelset
from pc_ovseg.tiles import OracleSpec, TiledResult, kd_tiles, run_tiled, split

PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]
BUDGET = 30_000
NAMES = load_labelset("asprs").class_names


@pytest.fixture(scope="module")
def city(tmp_path_factory, shared_data) -> dict:
    return write_city(tmp_path_factory.mktemp("city") / "block.las", shared_data, 110_000)


def _cfg(**scale) -> RunConfig:
    cfg = RunConfig()
    cfg.output.labels = "asprs"
    cfg.output.progress = False
    for k, v in scale.items():
        setattr(cfg.scale, k, v)
    return cfg


def _oracle() -> OracleSpec:
    return OracleSpec("classification", NAMES)


@pytest.fixture(scope="module")
def tiled(city, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiled")
    return out, run_tiled(city["path"], out, _cfg(), budget=BUDGET, oracle=_oracle())


@pytest.fixture(scope="module")
def whole(city, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return out, run_tiled(city["path"], out, _cfg(), budget=10**9, oracle=_oracle())


def test_kd_tiles_keep_the_budget():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0, 50, (64, 40)))
    counts[:10, :10] *= 20                       # a dense downtown
    rects = kd_tiles(counts, np.arange(65.0), np.arange(41.0), 5000)
    cover = np.zeros_like(counts)
    for i0, i1, j0, j1, n in rects:
        assert n == counts[i0:i1, j0:j1].sum() and (n <= 5000 or (i1 - i0, j1 - j0) == (1, 1))
        cover[i0:i1, j0:j1] += 1
    assert (cover[counts > 0] == 1).all()        # every occupied cell in exactly one tile
    assert sum(r[4] for r in rects) == counts.sum()


def test_split_streams_the_las(city, tmp_path, monkeypatch):
    """Chunked reading (tiny chunks) gives the same tiles; every point is in exactly one core."""
    a = split(city["path"], tmp_path / "a", budget=BUDGET, halo=4.0, progress=False)
    monkeypatch.setattr(tiles, "CHUNK", 7_777)
    b = split(city["path"], tmp_path / "b", budget=BUDGET, halo=4.0, progress=False)
    assert a.points == b.points == city["points"] and len(a.tiles) == 4
    assert [t.core for t in a.tiles] == [t.core for t in b.tiles]
    owner = np.zeros(a.points, np.int64)
    for ta, tb in zip(a.tiles, b.tiles):
        ca, ka = tiles.load_tile(tmp_path / "a", ta)
        cb, kb = tiles.load_tile(tmp_path / "b", tb)
        ia, ib = ca.fields["point_id"], cb.fields["point_id"]
        assert np.array_equal(np.sort(ia), np.sort(ib)) and ka.sum() == kb.sum()
        np.add.at(owner, ia[ka], 1)
        assert (~ka).sum() > 0 and len(ia) <= BUDGET * 1.3          # a halo, and not much of it
        w = ca.world_xyz
        assert (w[:, 0] >= ta.halo[0]).all() and (w[:, 0] < ta.halo[2]).all()
        assert ca.fields["classification"].dtype == np.uint8 and ca.rgb is not None
    assert (owner == 1).all()
    # a finished split of the same source and settings is reused
    again = split(city["path"], tmp_path / "a", budget=BUDGET, halo=4.0, progress=False)
    assert again.stamp == a.stamp and (tmp_path / "a" / "tiles" / "t0000" / "points.npz").is_file()


def test_tiled_agrees_with_whole(tiled, whole):
    (out_t, t), (out_w, w) = tiled, whole
    assert t["tiles"] == t["tiles_done"] == 4 and w["tiles"] == 1 and not t["failed"]
    assert t["coverage"] >= 0.98 and w["coverage"] >= 0.98, (t["coverage"], w["coverage"])
    assert abs(t["oacc"] - w["oacc"]) <= 0.01, (t["oacc"], w["oacc"])
    lt, _ = TiledResult(out_t).labels(NAMES)
    lw, _ = TiledResult(out_w).labels(NAMES)
    both = (lt >= 0) & (lw >= 0)
    # the labels agree where both saw a point; what differs is which few points a plan misses
    assert (lt == lw)[both].mean() >= 0.995 and (lt == lw).mean() >= 0.985, ((lt == lw)[both].mean(), (lt == lw).mean())
    assert max(r["peak_rss_mb"] for r in t["per_tile"]) > 100


def test_merged_exports(tiled, city):
    import laspy
    from pc_ovseg import io
    out, s = tiled
    assert sorted(Path(p).name for p in s["merged"]) == ["labels.las", "labels.ply"]
    ply = io.read_cloud(out / "labels.ply")
    assert len(ply) == city["points"]
    lab, _ = TiledResult(out).labels(NAMES)
    ids = ply.fields["input_point_id"] if "input_point_id" in ply.fields else ply.fields["point_id"]
    assert np.array_equal(np.sort(ids), np.arange(city["points"]))
    pos = ply.fields["label"]
    ls = load_labelset("asprs")
    seen = pos >= 0
    assert (seen == (lab[ids] >= 0)).all()
    with laspy.open(out / "labels.las") as f:
        las = f.read()
    assert len(las.points) == city["points"]
    src = laspy.read(city["path"])
    # world coordinates survive tiling and merging to the millimetre
    order = np.argsort(np.asarray(las["point_id"] if "point_id" in las.point_format.dimension_names
                                  else las["input_point_id"]))
    assert np.abs(np.asarray(las.x)[order] - np.asarray(src.x)).max() < 2e-3
    # the input's classification stays in `classification`; the prediction is the `label` dimension
    assert np.array_equal(np.asarray(las.classification)[order], np.asarray(src.classification))
    assert set(np.unique(np.asarray(las["label"]))) <= set(ls.ids.tolist()) | {-1}


def test_resume_per_tile(tiled, city, tmp_path):
    out, s = tiled
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = run_tiled(city["path"], copy, _cfg(), budget=BUDGET, oracle=_oracle())
    assert again["tiles_cached"] == 4 and again["oacc"] == s["oacc"]
    (copy / "tiles" / "t0002" / "result.json").unlink()
    again = run_tiled(city["path"], copy, _cfg(), budget=BUDGET, oracle=_oracle())
    assert again["tiles_cached"] == 3 and again["oacc"] == s["oacc"]


def test_ray_equals_local(tiled, city, tmp_path):
    out, s = tiled
    r = run_tiled(city["path"], tmp_path / "ray", _cfg(executor="ray", workers=2), budget=BUDGET, oracle=_oracle())
    assert r["tiles_done"] == 4 and r["executor"] == "ray", r["failed"]
    a, _ = TiledResult(out).labels(NAMES)
    b, _ = TiledResult(tmp_path / "ray").labels(NAMES)
    assert np.array_equal(a, b)
    pids = {json.loads((tmp_path / "ray" / "tiles" / t / "result.json").read_text())["worker_pid"]
            for t in ("t0000", "t0001", "t0002", "t0003")}
    assert os.getpid() not in pids


def test_a_bad_tile_is_reported(tiled, city, tmp_path):
    out, _ = tiled
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "tiles" / "t0001" / "result.json").unlink()
    p = copy / "tiles" / "t0001" / "points.npz"
    p.write_bytes(p.read_bytes()[:1000])
    s = run_tiled(city["path"], copy, _cfg(retries=0), budget=BUDGET, oracle=_oracle())
    assert s["tiles_done"] == 3 and s["tiles_failed"] == 1
    err = s["failed"]["t0001"]["error"]
    assert "points.npz" in err and "\n" not in err
    (copy / "tiles.json").write_text("{not json")
    with pytest.raises(InputError, match="tile index") as e:
        TiledResult(copy)
    assert "\n" not in str(e.value)


def test_level_of_detail(tiled, city):
    out, _ = tiled
    lod = TiledResult(out).lod(max_points=20_000)
    assert 5_000 < len(lod.cloud) <= 30_000 and lod.meta["lod_of"] == city["points"]
    again = TiledResult(out).lod(max_points=20_000)
    assert np.array_equal(lod.cloud.fields["point_id"], again.cloud.fields["point_id"])   # not random
    assert lod.features.shape[1] == len(NAMES)


def test_cli_run_tiles(city, tmp_path):
    from pc_ovseg.encoders.testing import make_tiny_clip_checkpoint
    ckpt = tmp_path / "tiny.pt"
    make_tiny_clip_checkpoint(ckpt)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pc_ovseg", "run", city["path"], "--out", tmp_path / "o", "--labels", "asprs",
           "--tiles", str(BUDGET), "--clip-model", "pcovseg-tiny-ViT", "--clip-weights", ckpt,
           "--max-views", "6", "--json"]
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout)
    assert s["tiles"] == 4 and s["tiles_done"] == 4 and s["points"] == city["points"], s["failed"]
    q = subprocess.run(list(map(str, [sys.executable, "-m", "pc_ovseg", "query", tmp_path / "o" / "tiles.json",
                                      "--labels", "asprs", "--out", tmp_path / "q", "--json"])),
                       capture_output=True, text=True, timeout=600, env=env)
    assert q.returncode == 0, q.stderr[-2000:]
    assert (tmp_path / "q" / "labels.ply").is_file()


def test_bench_tiles_a_big_scene(shared_data, tmp_path):
    """`pc-ovseg bench sensaturban` on a block bigger than a tile runs it tile by tile, scored as one."""
    from dataset_fixtures_other import write_sensaturban
    from pc_ovseg.bench import run_bench
    from pc_ovseg.config import BenchConfig
    write_sensaturban(tmp_path / "su", shared_data)
    cfg = RunConfig()
    cfg.output.progress = False
    whole = run_bench("sensaturban", tmp_path / "su", tmp_path / "w", cfg, BenchConfig(oracle=True, split="train"))
    cfg.scale.tiles = 5000
    tiled = run_bench("sensaturban", tmp_path / "su", tmp_path / "t", cfg, BenchConfig(oracle=True, split="train"))
    assert tiled["scenes_done"] == whole["scenes_done"] >= 1 and not tiled["failed"], tiled["failed"]
    big = [n for n, r in tiled["scene_results"].items() if r["points"] > 5000]
    assert big and (tmp_path / "t" / big[0] / "tiles.json").is_file()
    # smaller tiles get finer views (docs/scale.md): never worse than the whole scene
    assert tiled["coverage"] >= 0.97 and tiled["miou"] >= whole["miou"] - 0.01, (tiled["miou"], whole["miou"])


def test_viewer_opens_a_tiled_run(tiled):
    from pc_ovseg.viewer import ViewerScene
    out, _ = tiled
    scene = ViewerScene.from_path(out, max_display_points=20_000)
    assert 5_000 < len(scene.cloud) <= 30_000 and scene.features is not None


def test_compressed_features(city, tiled, tmp_path):
    """--compress K: one basis over all tiles; queries project text into it and keep their answers."""
    out, s = tiled
    cfg = _cfg()
    cfg.output.compress = 6
    r = run_tiled(city["path"], tmp_path / "c", cfg, budget=BUDGET, oracle=_oracle())
    res = TiledResult(tmp_path / "c")
    fcs = [fc for _, fc in res._fused()]
    assert all(fc.features.shape[1] == 6 and fc.basis.shape == (len(NAMES), 6) for fc in fcs)
    assert all(np.array_equal(fcs[0].basis, fc.basis) for fc in fcs)       # one basis for the run
    full, _ = TiledResult(out).labels(NAMES)
    small, _ = res.labels(NAMES)
    assert (full == small).mean() >= 0.995 and r["oacc"] == s["oacc"]
    assert not list((tmp_path / "c" / "tiles").glob("*/sample.npy"))


def test_compress_a_whole_run(tmp_path, shared_data):
    from pc_ovseg.data import FeatureCloud
    from pc_ovseg.fusion import compress, fit_basis, sample_rows
    from pc_ovseg.query import QueryEngine
    rng = np.random.default_rng(0)
    n, d = 5000, 64
    lab = rng.integers(0, 5, n)
    cent = rng.normal(size=(5, d))
    f = cent[lab] + 0.05 * rng.normal(size=(n, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    f[:100] = 0                                              # unseen rows stay unseen
    from pc_ovseg.data import PointCloud
    fc = FeatureCloud(PointCloud(rng.normal(size=(n, 3))), f.astype(np.float16),
                      (np.abs(f).sum(1) > 0).astype(np.float32), np.ones(n, np.uint16),
                      class_names=[f"c{i}" for i in range(d)])
    small = compress(fc, fit_basis(sample_rows(fc.features, 2000), 8))
    small.save(tmp_path / "s.npz")
    back = FeatureCloud.load(tmp_path / "s.npz")
    assert back.features.shape == (n, 8) and back.text_dim == d and (back.features[:100] == 0).all()
    a = QueryEngine(fc).heatmap("c3")
    b = QueryEngine(back).heatmap("c3")
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_ply_is_streamed_too(city, tmp_path, monkeypatch):
    """A binary PLY is memory-mapped chunk by chunk (SensatUrban tiles are PLY): the same points,
    fields and tiles as the LAS it was written from."""
    from pc_ovseg import io
    from pc_ovseg.io.ply import iter_ply
    cloud = io.read_cloud(city["path"])
    ply = tmp_path / "block.ply"
    io.write(ply, cloud)
    chunks = list(iter_ply(ply, 7_777))
    assert len(chunks) == -(-len(cloud) // 7_777)
    xyz = np.concatenate([c[0] for c in chunks])
    assert np.abs(xyz - cloud.world_xyz).max() < 1e-3
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), cloud.rgb)
    assert np.array_equal(np.concatenate([c[2]["classification"] for c in chunks]), cloud.fields["classification"])
    monkeypatch.setattr(tiles, "CHUNK", 7_777)
    a = split(city["path"], tmp_path / "a", budget=BUDGET, halo=4.0, progress=False)
    b = split(ply, tmp_path / "b", budget=BUDGET, halo=4.0, progress=False)
    # the same tiles; a few points on a core edge move with float32 rounding of the PLY's coordinates
    assert len(a.tiles) == len(b.tiles) and b.points == a.points
    assert sum(t.core_points for t in b.tiles) == a.points
    assert all(abs(x.core_points - y.core_points) <= 10 for x, y in zip(a.tiles, b.tiles))


def test_a_laz_input_gets_a_laz_result(shared_data, tmp_path):
    import laspy
    city = write_city(tmp_path / "block.laz", shared_data, 40_000)
    s = run_tiled(city["path"], tmp_path / "o", _cfg(), budget=15_000, oracle=_oracle())
    assert s["tiles_done"] == s["tiles"] >= 2
    assert sorted(Path(p).name for p in s["merged"]) == ["labels.laz", "labels.ply"]
    with laspy.open(tmp_path / "o" / "labels.laz") as f:
        assert f.header.point_count == city["points"] and f.header.are_points_compressed
        pts = f.read()
    assert "label" in pts.point_format.dimension_names and "score" in pts.point_format.dimension_names
