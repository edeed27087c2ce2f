"""City-scale clouds in bounded memory: tiles with halos, run one by one or on an executor.

A cloud of more points than a tile budget is split on the ground plane into tiles of at most
that many core points (a k-d split of an XY point histogram, so dense and sparse areas get
tiles of equal work) and each tile reaches ``halo`` metres past its core. LAS/LAZ are read in
chunks and never whole; each tile is then planned, rendered, encoded and fused on its own (core
+ halo, so views near a seam see across it), and every point keeps the result of the one tile
whose core holds it. Layout of ``OUT``:

    OUT/tiles.json               the tile index: source stamp, budget, halo, scene kind, tiles
    OUT/tiles/tNNNN/points.npz   the tile's points (core + halo), their ids in the source, core flag
    OUT/tiles/tNNNN/cache/       its views' features and visibility (a killed tile resumes here)
    OUT/tiles/tNNNN/fused.npz    the core points' fused features (FeatureCloud with a point_id field)
    OUT/tiles/tNNNN/labels.*     the core points labelled (PLY/LAS/NPZ, as `run` writes them)
    OUT/tiles/tNNNN/result.json  views, coverage, seconds, peak memory (+ confusion with a GT field)
    OUT/labels.ply|las           every tile's labels merged, streamed tile by tile
    OUT/summary.json

Peak memory is one tile's working set (features of core + halo while fusing) plus the split's
chunk, whatever the cloud's size. :class:`TiledResult` queries the tiles one at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from .config import RunConfig
from .data import FeatureCloud, PointCloud
from .errors import InputError
from .store import atomic_write, digest, file_stamp, finished, write_json

INDEX = "tiles.json"
CHUNK = 2_000_000          # points per chunk read from a LAS/LAZ file
HIST_CELLS = 2048          # the XY histogram the split is planned on: at most this many cells a side
KIND_SAMPLE = 200_000      # points of the whole cloud the scene kind is detected on
COMPRESS_SAMPLE = 200_000  # rows over all tiles a feature basis is fitted on (--compress)
HALO_SHARE = 0.15          # a tile's halo reaches at most this share of its core's shorter side


# --- the plan ---------------------------------------------------------------------------------------

@dataclass
class Tile:
    id: int
    core: tuple[float, float, float, float]      # world x0, y0, x1, y1 (half-open)
    halo: tuple[float, float, float, float]
    core_points: int = 0
    points: int = 0

    @property
    def name(self) -> str:
        return f"t{self.id:04d}"


@dataclass
class TileIndex:
    source: str
    stamp: list
    points: int
    budget: int
    halo: float
    kind: str
    bounds: list
    tiles: list[Tile] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    has_rgb: bool = False

    def save(self, path) -> None:
        d = {k: v for k, v in self.__dict__.items() if k != "tiles"}
        d["tiles"] = [t.__dict__ | {"name": t.name} for t in self.tiles]
        write_json(path, d)

    @classmethod
    def load(cls, path) -> "TileIndex":
        try:
            d = json.loads(Path(path).read_text())
            tiles = [Tile(t["id"], tuple(t["core"]), tuple(t["halo"]), t["core_points"], t["points"]) for t in d.pop("tiles")]
            return cls(**d, tiles=tiles)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a pc_ovseg tile index ({type(exc).__name__}: {exc})") from None


def kd_tiles(counts: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, budget: int) -> list[tuple]:
    """Split the XY histogram ``counts`` (nx, ny) into rectangles of at most ``budget`` points:
    halve the longer side (in metres) at the count median until each part fits or is one cell."""
    out = []

    def rec(i0, i1, j0, j1):
        block = counts[i0:i1, j0:j1]
        n = int(block.sum())
        if n == 0:
            return
        if n <= budget or (i1 - i0 == 1 and j1 - j0 == 1):
            out.append((i0, i1, j0, j1, n))
            return
        along_x = (x_edges[i1] - x_edges[i0]) >= (y_edges[j1] - y_edges[j0])
        if along_x and i1 - i0 == 1:
            along_x = False
        if not along_x and j1 - j0 == 1:
            along_x = True
        prof = block.sum(1 if along_x else 0)
        c = np.cumsum(prof)
        k = int(np.searchsorted(c, c[-1] / 2.0)) + 1          # first cut at or past the median
        k = min(max(k, 1), len(prof) - 1)
        if along_x:
            rec(i0, i0 + k, j0, j1)
            rec(i0 + k, i1, j0, j1)
        else:
            rec(i0, i1, j0, j0 + k)
            rec(i0, i1, j0 + k, j1)

    rec(0, counts.shape[0], 0, counts.shape[1])
    return out


def _in_box(xy: np.ndarray, box) -> np.ndarray:
    """Half-open [x0, x1) x [y0, y1): cores share edges, so every point is in exactly one core
    (the histogram's last edge lies past the cloud's maximum)."""
    x0, y0, x1, y1 = box
    return (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)


# --- reading in chunks ------------------------------------------------------------------------------

def _source_stamp(source) -> list:
    """A file by its stamp; a cloud in memory by its content (points, colour and every field:
    a bench scene's GT travels as a field, so new GT means a new split)."""
    if isinstance(source, PointCloud):
        return ["cloud", len(source), digest(source.xyz, source.origin, source.rgb,
                                             *(source.fields[k] for k in sorted(source.fields)), length=16)]
    return file_stamp(source)


def iter_chunks(source, chunk: int = CHUNK):
    """(world xyz float64, rgb uint8 | None, fields) per chunk: LAS/LAZ streamed with laspy's
    chunk iterator, binary PLY memory-mapped; any other input read whole by pc_ovseg.io and sliced."""
    if isinstance(source, PointCloud):
        cloud = source
    elif str(source).lower().endswith((".las", ".laz")):
        from .io.las import iter_las
        yield from iter_las(source, chunk)
        return
    elif str(source).lower().endswith(".ply"):
        from .io.ply import iter_ply
        yield from iter_ply(source, chunk)
        return
    else:
        from . import io
        cloud = io.read_cloud(source)
    for a in range(0, len(cloud), chunk):
        sl = slice(a, a + chunk)
        yield (cloud.xyz[sl].astype(np.float64) + cloud.origin, None if cloud.rgb is None else cloud.rgb[sl],
               {k: v[sl] for k, v in cloud.fields.items()})


def count_points(path) -> int | None:
    """Points in a file from its header alone (LAS/LAZ, PLY, NPY), or None when only reading it
    tells (then it is read whole; folders of RGB-D frames are never tiled)."""
    p = str(path)
    try:
        if p.lower().endswith((".las", ".laz")):
            import laspy
            with laspy.open(p) as f:
                return int(f.header.point_count)
        if p.lower().endswith(".ply"):
            with open(p, "rb") as f:
                for _ in range(200):
                    ln = f.readline()
                    if ln.startswith(b"element vertex"):
                        return int(ln.split()[2])
                    if not ln or ln.strip() == b"end_header":
                        break
        if p.lower().endswith(".npy"):
            return int(np.load(p, mmap_mode="r").shape[0])
    except Exception:  # noqa: BLE001 - the reader will name the problem
        return None
    return None


def tile_budget(source, scale) -> int | None:
    """Points per tile for ``source`` under ``scale`` (ScaleConfig), or None to run it whole."""
    if scale.tiles == "off" or (not isinstance(source, PointCloud) and os.path.isdir(str(source))):
        return None
    if isinstance(source, PointCloud) and source.grid_shape is not None:
        return None   # an organised cloud is one camera frame: it keeps its own view
    n = len(source) if isinstance(source, PointCloud) else count_points(source)
    if n is None:
        return None if scale.tiles == "auto" else int(scale.tiles)
    return scale.tile_budget(n)


def split(source, out, *, budget: int, halo: float, views_cfg=None, progress: bool = True) -> TileIndex:
    """Plan the tiles of ``source`` and write each tile's points; reuses a finished split of the
    same source and settings (``OUT/tiles.json`` is written last, so a killed split starts over)."""
    from tqdm.auto import tqdm
    out = Path(out)
    stamp = _source_stamp(source)
    idx_path = out / INDEX
    if idx_path.is_file():
        try:
            old = TileIndex.load(idx_path)
            if old.stamp == stamp and old.budget == budget and old.halo == halo:
                return old
        except InputError:
            pass
    src_name = source.source if isinstance(source, PointCloud) else str(source)
    # pass 1: bounds and the histogram, and a thin sample to detect the scene kind on
    lo, hi, total = np.full(3, np.inf), np.full(3, -np.inf), 0
    finite = 0
    for xyz, _, _ in iter_chunks(source):
        total += len(xyz)
        xyz = xyz[np.isfinite(xyz).all(1)]   # (points without coordinates get no tile, no label)
        if len(xyz):
            lo, hi = np.minimum(lo, xyz.min(0)), np.maximum(hi, xyz.max(0))
            finite += len(xyz)
    if finite == 0:
        raise InputError(src_name, "contains no points")
    ext = np.maximum(hi[:2] - lo[:2], 1e-6)
    cell = max(float(ext.max()) / HIST_CELLS, 0.25)
    nx, ny = (int(np.ceil(e / cell)) + 1 for e in ext)
    xe, ye = lo[0] + cell * np.arange(nx + 1), lo[1] + cell * np.arange(ny + 1)
    counts = np.zeros((nx, ny), np.int64)
    step = max(1, finite // KIND_SAMPLE)
    sample, fields, has_rgb = [], None, False
    for xyz, rgb, f in tqdm(iter_chunks(source), desc="planning tiles", unit="chunk", disable=not progress):
        xyz = xyz[np.isfinite(xyz).all(1)]
        i = np.minimum(((xyz[:, 0] - lo[0]) / cell).astype(np.int64), nx - 1)
        j = np.minimum(((xyz[:, 1] - lo[1]) / cell).astype(np.int64), ny - 1)
        counts += np.bincount(i * ny + j, minlength=nx * ny).reshape(nx, ny)
        sample.append(xyz[::step])
        fields = sorted(f) if fields is None else fields
        has_rgb = has_rgb or rgb is not None
    rects = kd_tiles(counts, xe, ye, budget)
    tiles = []
    for k, (i0, i1, j0, j1, n) in enumerate(rects):
        core = (float(xe[i0]), float(ye[j0]), float(xe[i1]), float(ye[j1]))
        # a halo of at most HALO_SHARE of the core's shorter side: dense clouds have small tiles
        h = min(halo, HALO_SHARE * min(core[2] - core[0], core[3] - core[1]))
        tiles.append(Tile(k, core, (core[0] - h, core[1] - h, core[2] + h, core[3] + h), n, 0))
    kind = _detect_kind(np.concatenate(sample), views_cfg)
    origin = np.round((lo + hi) / 2)
    # pass 2: every chunk's points into each tile whose halo box holds them
    tdir = out / "tiles"
    if tdir.exists():
        shutil.rmtree(tdir)
    parts = {t.id: 0 for t in tiles}
    base = 0
    for xyz, rgb, f in tqdm(iter_chunks(source), desc="writing tiles", unit="chunk", disable=not progress):
        ids = np.arange(base, base + len(xyz), dtype=np.int64)
        base += len(xyz)
        ok = np.isfinite(xyz).all(1)
        if not ok.all():
            xyz, ids, f = xyz[ok], ids[ok], {k: v[ok] for k, v in f.items()}
            rgb = None if rgb is None else rgb[ok]
        if not len(xyz):
            continue
        cmin, cmax = xyz[:, :2].min(0), xyz[:, :2].max(0)
        for t in tiles:
            h = t.halo
            if cmax[0] < h[0] or cmin[0] > h[2] or cmax[1] < h[1] or cmin[1] > h[3]:
                continue
            m = _in_box(xyz[:, :2], h)
            if not m.any():
                continue
            core = _in_box(xyz[m, :2], t.core)
            d = tdir / t.name / "parts"
            d.mkdir(parents=True, exist_ok=True)
            arrays = {"xyz": xyz[m], "point_id": ids[m], "core": core, **{f"f_{k}": v[m] for k, v in f.items()}}
            if rgb is not None:
                arrays["rgb"] = rgb[m]
            np.savez(d / f"{parts[t.id]:06d}.npz", **arrays)
            parts[t.id] += 1
    for t in tqdm(tiles, desc="joining tiles", unit="tile", disable=not progress):
        t.points, t.core_points = _join_parts(tdir / t.name, t, origin)
    tiles = [t for t in tiles if t.core_points > 0]
    index = TileIndex(src_name, stamp, int(total), int(budget), float(halo), kind,
                      [lo.tolist(), hi.tolist()], tiles, fields or [], has_rgb)
    index.save(idx_path)
    return index


def _join_parts(d: Path, t: Tile, origin: np.ndarray) -> tuple[int, int]:
    """One tile's chunks as one points.npz, relative to the split's origin: one origin for all
    tiles, so their exports merge (float32 keeps 0.1 mm at 2 km from it, 4 mm at 50 km)."""
    files = sorted((d / "parts").glob("*.npz")) if (d / "parts").is_dir() else []
    if not files:
        return 0, 0
    loaded = [dict(np.load(f)) for f in files]
    arrays = {k: np.concatenate([p[k] for p in loaded]) for k in loaded[0]}
    arrays["xyz"] = (arrays["xyz"] - origin).astype(np.float32)
    arrays["origin"] = origin
    with atomic_write(d / "points.npz") as tmp:
        np.savez(tmp, **arrays)
    shutil.rmtree(d / "parts")
    return len(arrays["point_id"]), int(arrays["core"].sum())


def _detect_kind(sample_xyz: np.ndarray, views_cfg) -> str:
    """The scene kind of the whole cloud, once, so every tile gets the same camera plan."""
    if views_cfg is not None and views_cfg.kind != "auto":
        return views_cfg.kind
    from .config import ViewsConfig
    from .views.make import plan_kind
    origin = np.round(sample_xyz.mean(0))
    return plan_kind(PointCloud((sample_xyz - origin).astype(np.float32), origin=origin), views_cfg or ViewsConfig())


def load_tile(out, tile: Tile) -> tuple[PointCloud, np.ndarray]:
    """A tile's points (fields as in the source plus ``point_id``) and its core mask."""
    p = Path(out) / "tiles" / tile.name / "points.npz"
    import zipfile
    try:
        with np.load(p) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(p, f"unreadable tile ({type(exc).__name__}); delete {INDEX} to split again") from None
    fields = {k[2:]: v for k, v in a.items() if k.startswith("f_")}
    fields["point_id"] = a["point_id"]
    cloud = PointCloud(a["xyz"], rgb=a.get("rgb"), fields=fields, origin=a["origin"], source=str(p))
    return cloud, a["core"].astype(bool)


# --- one tile ---------------------------------------------------------------------------------------

@dataclass
class OracleSpec:
    """2D predictions made from a GT field (the oracle path of scripts/bench_oracle.py), per tile."""

    field: str
    class_names: list
    noise: float = 0.0
    seed: int = 0
    divide: int = 1
    labelset: str | None = None       # score through this LabelSet (its prompts, ids) rather than the names
    instance_field: str | None = None  # GT instance ids: the 2D masks are then the GT instances

    def labels(self, cloud: PointCloud) -> np.ndarray:
        from .oracle import load_gt
        return load_gt(cloud, self.field, list(self.class_names), divide=self.divide)

    def encoder(self, cloud: PointCloud):
        from .oracle import OracleLabels
        inst = np.asarray(cloud.fields[self.instance_field]) if self.instance_field else None
        return OracleLabels(self.labels(cloud), list(self.class_names), noise=self.noise, seed=self.seed,
                            instances=inst)


@dataclass
class TileJob:
    """What a worker needs for any tile of a run (picklable: it travels to processes and Ray)."""

    out: str
    cfg: RunConfig
    kind: str
    key: str
    oracle: OracleSpec | None = None
    gt: OracleSpec | None = None          # score each tile against this GT field (no oracle needed)
    view_progress: bool = False
    n_tiles: int = 1


@dataclass
class _TileState:
    view_encoder: object = None
    distilled: object = None


def _tile_setup(job: TileJob, view_encoder=None) -> _TileState:
    st = _TileState()
    if job.oracle is None:
        st.view_encoder = view_encoder if view_encoder is not None else job.cfg.encoder.build()
    if job.cfg.output.distilled:
        from .backbone.predict import load_model
        st.distilled = load_model(job.cfg.output.distilled)
    return st


def run_tile(job: TileJob, state: _TileState, tile: Tile) -> dict:
    """Views, features, fusion and labels of one tile; its core points' results to its folder."""
    from .eval import evaluate
    from .export import export_labels
    from .labels import vocabulary
    from .pipeline import fuse_scene, scene_from
    from .executors import peak_memory_mb, reset_peak_memory
    t0 = time.perf_counter()
    reset_peak_memory()
    cfg = job.cfg
    tdir = Path(job.out) / "tiles" / tile.name
    cloud, core = load_tile(job.out, tile)
    enc = job.oracle.encoder(cloud) if job.oracle is not None else state.view_encoder
    views_cfg = replace(cfg.views, kind=job.kind) if job.kind in ("indoor", "aerial", "street", "object") else cfg.views
    scene = scene_from(cloud, views_cfg, plan_cache=tdir / "cache", progress=job.view_progress, source=cloud.source)
    fc, stats = fuse_scene(scene, enc, tdir / "cache", cfg, progress=job.view_progress)
    text = getattr(enc, "encoder", None)
    if state.distilled is not None:  # the 2D-3D ensemble on core + halo, as the fusion
        from .labels import vocabulary as _voc
        from .pipeline import ensemble_with_distilled
        fc = ensemble_with_distilled(fc, state.distilled, _voc(cfg.output.labels)["vocabulary"], tdir,
                                     tta=cfg.output.tta, device=cfg.encoder.device, text_encoder=text)
    n_inst = None
    if cfg.instances.enabled:   # on core + halo: objects across the seam are whole here (merge_instances)
        from .instances import make_instances
        inst = make_instances(fc, lambda: stats.cached_views(), cfg.instances)
        inst.views = [[f"{tile.name}/{v}" for v in vs] for vs in inst.views]
        inst.save(tdir / "instances.npz")
        n_inst = len(inst)
    keep = np.flatnonzero(core)
    fcc = FeatureCloud(cloud.select(keep), fc.features[keep], fc.weight[keep], fc.view_count[keep],
                       encoder=fc.encoder, class_names=fc.class_names, meta={**fc.meta, "tile": tile.name})
    del fc
    fcc.save(tdir / "fused.npz")
    if cfg.output.compress:  # rows the run's one feature basis is fitted on (compress_tiles)
        from .fusion import sample_rows
        with atomic_write(tdir / "sample.npy") as tmp:
            np.save(tmp, sample_rows(fcc.features, max(1000, COMPRESS_SAMPLE // max(job.n_tiles, 1))).astype(np.float16))
    labels_info = {}
    if cfg.output.labels:   # `fuse` stops at the features
        voc = vocabulary(cfg.output.labels)
        labels_info = export_labels(tdir, fcc, voc.pop("vocabulary"), **voc, formats=tuple(cfg.output.formats),
                                    result=tdir / "fused.npz", text_encoder=text)
    r = {"tile": tile.name, "key": job.key, "points": len(cloud), "core_points": int(len(keep)),
         "views": stats.views, "views_cached": stats.cached, "coverage": round(fcc.coverage, 6),
         "timings": {k: round(v, 3) for k, v in stats.timings.items()},
         "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": peak_memory_mb(), "worker_pid": os.getpid()}
    if n_inst is not None:
        r["instances"] = n_inst
    gt = job.gt or job.oracle
    if gt is not None:
        from .query import QueryEngine
        if gt.labelset:
            from .labels import load_labelset
            ls = load_labelset(gt.labelset)
            pos = np.asarray(QueryEngine(fcc, text_encoder=text).labels(ls).labels).astype(np.int64)
            pred, classes = np.where(pos >= 0, ls.ids[np.maximum(pos, 0)], -1), ls
        else:
            pred = QueryEngine(fcc, text_encoder=text).labels(list(gt.class_names)).labels
            classes = list(gt.class_names)
        res = evaluate(pred, gt.labels(fcc.cloud), classes)
        r.update(confusion=res.confusion.tolist(), class_ids=res.class_ids.tolist(),
                 unpredicted=res.unpredicted.tolist(), num_ignored=res.num_ignored, miou=res.miou)
    r["label_files"] = labels_info.get("files", [])
    write_json(tdir / "result.json", r)
    return r


def _work(job: TileJob, state: _TileState, tile: Tile) -> dict:
    return run_tile(job, state, tile)


# --- a tiled run ------------------------------------------------------------------------------------

def run_tiled(source, out, cfg: RunConfig | None = None, *, budget: int | None = None,
              oracle: OracleSpec | None = None, gt: OracleSpec | None = None, view_encoder=None) -> dict:
    """``run`` for a cloud of any size: split, every tile through the executor, merged labels.

    Resumes per tile (a finished tile's result.json holds the run's key) and, inside a tile, per
    view. A failed tile is retried, then reported; the merged files hold the tiles that finished."""
    from .eval import EvalResult
    from .executors import get_executor
    from .labels import vocabulary
    t0 = time.perf_counter()
    cfg = cfg or RunConfig()
    if cfg.output.labels:
        vocabulary(cfg.output.labels)     # a bad vocabulary fails before any point is read
    sc = cfg.scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = split(source, out, budget=budget or sc.tile_points, halo=sc.tile_halo, views_cfg=cfg.views,
                  progress=cfg.output.progress)
    t_split = time.perf_counter() - t0
    enc_parts = cfg.cache_parts(view_encoder) if oracle is None else {**cfg.cache_parts(), "encoder": oracle.__dict__}
    key = digest(index.stamp, index.budget, index.halo, enc_parts, cfg.output.labels, file_stamp(cfg.output.distilled),
                 cfg.output.compress, asdict(cfg.instances) if cfg.instances.enabled else None,
                 None if gt is None else gt.__dict__, length=16)
    done = {t.name: r for t in index.tiles if (r := finished(out / "tiles" / t.name / "result.json", key))}
    todo = [t for t in index.tiles if t.name not in done]
    workers = sc.workers or 1
    job = TileJob(str(out), cfg, index.kind, key, oracle, gt,
                  view_progress=cfg.output.progress and sc.executor == "local" and workers == 1, n_tiles=len(index.tiles))
    failed = {}
    if todo:
        with get_executor(sc.executor, **sc.executor_kw()) as ex:
            for o in ex.map(partial(_work, job), todo, setup=partial(_tile_setup, job, view_encoder), retries=sc.retries,
                            progress=cfg.output.progress, desc="tiles"):
                if o.ok:
                    done[o.item.name] = o.value
                else:
                    failed[o.item.name] = {"error": o.error, "attempts": o.attempts}
    results = [done[t.name] for t in index.tiles if t.name in done]
    if cfg.output.compress and results:
        compress_tiles(out, [t for t in index.tiles if t.name in done], cfg.output.compress)
    t = time.perf_counter()
    merged = merge_labels(out, [t for t in index.tiles if t.name in done], cfg.output.formats,
                          laz=str(index.source).lower().endswith(".laz")) if cfg.output.labels else []
    inst_summary = {}
    if cfg.instances.enabled and results:
        voc = vocabulary(cfg.output.labels)["vocabulary"] if cfg.output.labels else None
        inst_summary = merge_instances(out, [t for t in index.tiles if t.name in done], index.points,
                                       vocabulary=voc, text_encoder=getattr(view_encoder, "encoder", None))
    t_merge = time.perf_counter() - t
    core = sum(r["core_points"] for r in results)
    cov = sum(r["coverage"] * r["core_points"] for r in results) / max(core, 1)
    summary = {"input": index.source, "points": index.points, "tiles": len(index.tiles), "tiles_done": len(results),
               "tiles_cached": len(index.tiles) - len(todo), "tiles_failed": len(failed), "failed": failed,
               "budget": index.budget, "halo": index.halo, "kind": index.kind,
               "views": sum(r["views"] for r in results), "coverage": round(cov, 6),
               "executor": sc.executor, "workers": workers, "merged": merged + inst_summary.get("instance_files", []),
               **({"instances": inst_summary["instances"]} if inst_summary else {}),
               "per_tile": [{k: r.get(k) for k in ("tile", "points", "core_points", "views", "coverage", "seconds",
                                                   "peak_rss_mb", "miou")} for r in results],
               "timings": {"split": round(t_split, 3), "tiles": round(sum(r["seconds"] for r in results), 3),
                           "merge": round(t_merge, 3)}}
    if (gt or oracle) is not None and results:
        total = EvalResult.sum_records(results, list((gt or oracle).class_names))
        j = total.to_json()
        summary.update(miou=j["miou"], macc=j["macc"], oacc=j["oacc"], eval_coverage=j["coverage"],
                       per_class=j["per_class"], confusion=total.confusion.tolist(),
                       class_ids=total.class_ids.tolist(), unpredicted=total.unpredicted.tolist(),
                       num_ignored=int(total.num_ignored))
    summary["peak_rss_mb_max"] = max((r.get("peak_rss_mb") or 0 for r in results), default=None)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["config"] = cfg.to_dict()
    write_json(out / "summary.json", summary)
    return summary


def compress_tiles(out, tiles: list[Tile], k: int) -> np.ndarray:
    """One basis for every tile (fitted on rows sampled from each), each tile's fused.npz
    rewritten in it; ``OUT/basis.npy`` keeps it. Tiles already in this basis are left alone.
    Labels written per tile were made from the full features, before compression."""
    from .fusion import compress, fit_basis
    out = Path(out)
    samples = [np.load(out / "tiles" / t.name / "sample.npy") for t in tiles
               if (out / "tiles" / t.name / "sample.npy").is_file()]
    bpath = out / "basis.npy"
    basis = np.load(bpath) if bpath.is_file() else None   # a resumed run keeps its basis
    if basis is None or basis.shape[1] != min(k, basis.shape[0]):
        basis = fit_basis(np.concatenate(samples), k)
        with atomic_write(bpath) as tmp:
            np.save(tmp, basis)
    for t in tiles:
        p = out / "tiles" / t.name / "fused.npz"
        fc = FeatureCloud.load(p)
        if fc.basis is None:
            compress(fc, basis).save(p)
        (out / "tiles" / t.name / "sample.npy").unlink(missing_ok=True)
    return basis


# --- merged exports ---------------------------------------------------------------------------------

def merge_labels(out, tiles: list[Tile], formats, *, laz: bool = False) -> list[str]:
    """The tiles' label files joined into ``OUT/labels.<fmt>`` without holding more than one
    tile: binary PLY bodies are concatenated under one header; LAS points are re-quantised to
    one header and appended chunk by chunk (compressed as ``labels.laz`` when ``laz``: a LAZ
    input gets a LAZ result)."""
    out = Path(out)
    written = []
    parts = lambda ext: [out / "tiles" / t.name / f"labels.{ext}" for t in tiles]  # noqa: E731
    if "ply" in formats and tiles and all(p.is_file() for p in parts("ply")):
        merge_ply(parts("ply"), out / "labels.ply")
        written.append(str(out / "labels.ply"))
    for ext in ("las", "laz"):
        if ext in formats and tiles and all(p.is_file() for p in parts(ext)):
            dest = out / f"labels.{'laz' if laz else ext}"
            merge_las(parts(ext), dest)
            written.append(str(dest))
    return written


def _ply_header(path: Path) -> tuple[list[bytes], int, int]:
    with open(path, "rb") as f:
        lines = []
        while True:
            ln = f.readline()
            if not ln:
                raise InputError(path, "PLY header has no end_header")
            lines.append(ln)
            if ln.strip() == b"end_header":
                return lines, f.tell(), os.path.getsize(path)


def merge_ply(paths: list[Path], dest: Path) -> None:
    headers = [_ply_header(p) for p in paths]
    first = headers[0][0]
    if not first[1].startswith(b"format binary"):
        raise InputError(paths[0], "only binary PLY tiles can be merged")
    count_at = next(i for i, ln in enumerate(first) if ln.startswith(b"element vertex"))
    total = 0
    for p, (lines, _, _) in zip(paths, headers):
        if [ln for i, ln in enumerate(lines) if i != count_at] != [ln for i, ln in enumerate(first) if i != count_at]:
            raise InputError(p, "tile PLYs differ in their properties; they cannot be merged")
        total += int(lines[count_at].split()[2])
    merged = list(first)
    merged[count_at] = b"element vertex %d\n" % total
    with atomic_write(dest) as tmp, open(tmp, "wb") as w:
        w.writelines(merged)
        for p, (_, start, _) in zip(paths, headers):
            with open(p, "rb") as r:
                r.seek(start)
                shutil.copyfileobj(r, w, 16 << 20)


def merge_las(paths: list[Path], dest: Path) -> None:
    import laspy
    with laspy.open(paths[0]) as f0:
        header = laspy.LasHeader(point_format=f0.header.point_format, version=f0.header.version)
        header.scales = f0.header.scales
        header.offsets = f0.header.offsets
        for v in f0.header.vlrs:
            header.vlrs.append(v)
    dims = list(header.point_format.dimension_names)
    with atomic_write(dest) as tmp:
        with laspy.open(tmp, mode="w", header=header, do_compress=str(dest).endswith(".laz")) as w:
            for p in paths:
                with laspy.open(p) as r:
                    for pts in r.chunk_iterator(CHUNK):
                        rec = laspy.ScaleAwarePointRecord.zeros(len(pts), header=header)
                        for d in dims:
                            if d not in ("X", "Y", "Z"):
                                rec[d] = pts[d]
                        rec.x, rec.y, rec.z = pts.x, pts.y, pts.z
                        w.write_points(rec)


# --- instances across tiles -------------------------------------------------------------------------

SEAM_LINK = 0.5   # two tiles' instances are one where they share this share of the smaller one's part in the halo


def merge_instances(out, tiles: list[Tile], n_points: int, *, vocabulary=None, text_encoder=None) -> dict:
    """Every tile's instances (made on core + halo) joined into instances of the whole cloud.

    A point belongs to the instance its own tile (the one whose core holds it) gave it. An
    instance reaching into a neighbour's core through the halo meets the neighbour's instances
    there: when it and one of them share at least ``SEAM_LINK`` of the smaller of the two parts
    inside the halo (its own halo points, the neighbour's points in this halo), they are one object. Memory: per-point codes of the whole cloud (8 bytes a point) and one tile.
    Writes ``OUT/instances.npz`` (ids in source order, scores, features, boxes, views),
    ``OUT/instances.ply|las`` (tile by tile, merged as labels are) and ``OUT/instances.json``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .instances import Instances, export_rows
    out = Path(out)
    loaded = [(t, Path(out) / "tiles" / t.name / "instances.npz") for t in tiles]
    loaded = [(t, p) for t, p in loaded if p.is_file()]
    base, total = {}, 0
    owner = np.full(n_points, -1, np.int64)
    for t, p in loaded:          # pass 1: the instance that owns each point (its own tile's)
        cloud, core = load_tile(out, t)
        inst = Instances.load(p)
        base[t.name] = total
        pid = cloud.fields["point_id"][core]
        ids = inst.ids[core]
        owner[pid] = np.where(ids >= 0, ids + total, -1)
        total += len(inst)
    links = []
    for t, p in loaded:          # pass 2: halo points link an instance to the neighbour's owning one
        cloud, core = load_tile(out, t)
        inst = Instances.load(p)
        mine, theirs = inst.ids[~core], owner[cloud.fields["point_id"][~core]]
        ok = (mine >= 0) & (theirs >= 0)
        if not ok.any():
            continue
        a = mine[ok] + base[t.name]
        key, cnt = np.unique(a * max(total, 1) + theirs[ok], return_counts=True)
        ka, kb = key // max(total, 1), key % max(total, 1)
        mine_in_halo = np.bincount(a, minlength=total)                   # this tile's part past its core
        theirs_in_halo = np.bincount(theirs[theirs >= 0], minlength=total)  # the neighbour's part in this halo
        sel = cnt >= SEAM_LINK * np.minimum(mine_in_halo[ka], theirs_in_halo[kb])
        links.append(np.stack([ka[sel], kb[sel]], 1))
    pairs = np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    g = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(max(total, 1),) * 2)
    comp = connected_components(g, directed=False)[1][:total]
    # global ids: components that own at least one point, by first appearance
    owned = np.bincount(owner[owner >= 0], minlength=total) if total else np.zeros(0, np.int64)
    live = np.unique(comp[owned > 0]) if total else np.zeros(0, np.int64)
    gid_of_comp = np.full(int(comp.max()) + 1 if total else 1, -1, np.int64)
    gid_of_comp[live] = np.arange(len(live))
    gid = gid_of_comp[comp] if total else np.zeros(0, np.int64)
    K = len(live)
    ids_all = np.where(owner >= 0, gid[np.maximum(owner, 0)] if total else -1, -1)
    del owner
    # pass 3: per-instance score, feature and views (weighted by the points each part owns)
    w = np.zeros(K)
    score = np.zeros(K)
    feats = None
    views: list[list] = [[] for _ in range(K)]
    lo = np.full((K, 3), np.inf)
    hi = np.full((K, 3), -np.inf)
    for t, p in loaded:
        inst = Instances.load(p)
        codes = np.arange(len(inst)) + base[t.name]
        n_own = owned[codes].astype(np.float64)
        g_ = gid[codes]
        use = (g_ >= 0) & (n_own > 0)
        np.add.at(w, g_[use], n_own[use])
        np.add.at(score, g_[use], n_own[use] * inst.scores[use])
        if inst.features is not None and inst.features.shape[1]:
            if feats is None:
                feats = np.zeros((K, inst.features.shape[1]))
            np.add.at(feats, g_[use], n_own[use, None] * inst.features[use].astype(np.float64))
        for k in np.flatnonzero(use):
            views[g_[k]].append((n_own[k], inst.views[k] if k < len(inst.views) else []))
        cloud, core = load_tile(out, t)
        gc = ids_all[cloud.fields["point_id"][core]]
        m = gc >= 0
        xyz = cloud.xyz[core][m].astype(np.float64) + cloud.origin
        np.minimum.at(lo, gc[m], xyz)
        np.maximum.at(hi, gc[m], xyz)
    score = (score / np.maximum(w, 1e-9)).astype(np.float32)
    if feats is not None:
        feats = (feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-8)).astype(np.float32)
    merged_views = [[v for _, vs in sorted(parts, key=lambda x: -x[0]) for v in vs][:20] for parts in views]
    first = Instances.load(loaded[0][1]) if loaded else None
    inst = Instances(ids_all, score, merged_views, feats, first.encoder if first else "",
                     first.class_names if first else None,
                     {"tiles": len(loaded), "tile_instances": total, "seam_links": int(len(pairs)),
                      "feature": (first.meta or {}).get("feature") if first else None}, lo, hi)
    inst.save(out / "instances.npz")
    # per tile: its core points with their global ids, merged as the labels are
    from . import io
    from .colors import UNSEEN_RGB, palette
    pal = palette(K + 20)[20:]
    parts = {"ply": [], "las": []}
    for t, _ in loaded:
        cloud, core = load_tile(out, t)
        cc = cloud.select(np.flatnonzero(core))
        gc = ids_all[cc.fields["point_id"]].astype(np.int32)
        colors = np.tile(UNSEEN_RGB, (len(gc), 1)).astype(np.uint8)
        colors[gc >= 0] = pal[gc[gc >= 0]]
        extra = {"instance": gc, "instance_score": np.where(gc >= 0, score[np.maximum(gc, 0)] if K else 0, 0).astype(np.float32)}
        for ext in parts:
            dest = out / "tiles" / t.name / f"instances.{ext}"
            io.write(dest, cc, colors=colors, extra=extra)
            parts[ext].append(dest)
    files = [str(out / "instances.npz")]
    if parts["ply"]:
        merge_ply(parts["ply"], out / "instances.ply")
        merge_las(parts["las"], out / "instances.las")
        files += [str(out / "instances.ply"), str(out / "instances.las")]
    engine = None
    if vocabulary is not None and K and feats is not None:
        from .query import QueryEngine
        engine = QueryEngine(FeatureCloud.load(out / "tiles" / loaded[0][0].name / "fused.npz"), text_encoder=text_encoder)
    rows = export_rows(inst, np.stack([lo, hi], 1) if K else np.zeros((0, 2, 3)), vocabulary=vocabulary, engine=engine)
    write_json(out / "instances.json", {"instances": K, "points_in_instances": int((ids_all >= 0).sum()),
                                        "tiles": len(loaded), "seam_links": int(len(pairs)), "objects": rows})
    files.append(str(out / "instances.json"))
    return {"instances": K, "instance_files": files}


# --- querying a tiled result ------------------------------------------------------------------------

class TiledResult:
    """A tiled run's features, queried one tile at a time (``labels``, ``heatmap``), and a
    level-of-detail subsample of all tiles for the viewer. Arrays come back in source order."""

    def __init__(self, out, text_encoder=None):
        self.out = Path(out if not str(out).endswith(INDEX) else Path(out).parent)
        self.index = TileIndex.load(self.out / INDEX)
        self.text_encoder = text_encoder

    def _fused(self):
        for t in self.index.tiles:
            p = self.out / "tiles" / t.name / "fused.npz"
            if p.is_file():
                yield t, FeatureCloud.load(p)

    def labels(self, vocabulary) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) over every point of the source; -1 / 0 where unseen or not run."""
        from .query import QueryEngine
        lab = np.full(self.index.points, -1, np.int32)
        score = np.zeros(self.index.points, np.float32)
        for _, fc in self._fused():
            r = QueryEngine(fc, text_encoder=self.text_encoder).labels(vocabulary)
            ids = fc.cloud.fields["point_id"]
            lab[ids], score[ids] = r.labels, r.scores
        return lab, score

    def heatmap(self, text: str) -> np.ndarray:
        from .query import QueryEngine
        heat = np.zeros(self.index.points, np.float32)
        for _, fc in self._fused():
            heat[fc.cloud.fields["point_id"]] = QueryEngine(fc, text_encoder=self.text_encoder).heatmap(text)
        return heat

    def export_labels(self, out, vocabulary, formats=("ply", "las"), **kw) -> dict:
        """``pc-ovseg query TILES --labels``: each tile labelled and written to
        ``out/tiles/tNNNN/``, then merged into ``out/labels.*``."""
        from .export import export_labels
        out = Path(out)
        done, counts = [], {}
        for t, fc in self._fused():
            r = export_labels(out / "tiles" / t.name, fc, vocabulary, formats=formats,
                              text_encoder=self.text_encoder, **kw)
            for n, c in r["label_counts"].items():
                counts[n] = counts.get(n, 0) + c
            done.append(t)
        return {"files": merge_labels(out, done, formats), "tiles": len(done), "label_counts": counts,
                "points": self.index.points}

    def export_heatmap(self, out, text: str, stem: str) -> list[str]:
        """One query's heatmap per tile, merged into ``out/heatmap_<stem>.ply``."""
        from . import io
        from .colors import heat_colors
        from .query import QueryEngine
        out = Path(out)
        parts = []
        for t, fc in self._fused():
            heat = QueryEngine(fc, text_encoder=self.text_encoder).heatmap(text)
            p = out / "tiles" / t.name / f"heatmap_{stem}.ply"
            p.parent.mkdir(parents=True, exist_ok=True)
            io.write(p, fc.cloud, scores=heat, colors=heat_colors(heat))
            parts.append(p)
        merge_ply(parts, out / f"heatmap_{stem}.ply")
        return [str(out / f"heatmap_{stem}.ply")]

    def lod(self, max_points: int = 1_000_000) -> FeatureCloud:
        """Every tile voxel-decimated (one point per voxel, the same voxel size in all tiles) to
        about ``max_points`` in all: what the viewer loads for a result of any size."""
        area = sum((t.core[2] - t.core[0]) * (t.core[3] - t.core[1]) for t in self.index.tiles)
        voxel = max(float(np.sqrt(area / max(max_points, 1))) * 0.7, 1e-3) if self.index.points > max_points else None
        parts = []
        for _, fc in self._fused():
            if voxel is not None:
                keep = _voxel_pick(fc.cloud.world_xyz, voxel)
                fc = FeatureCloud(fc.cloud.select(keep), fc.features[keep], fc.weight[keep], fc.view_count[keep],
                                  encoder=fc.encoder, class_names=fc.class_names, meta=fc.meta, basis=fc.basis)
            parts.append(fc)
        if not parts:
            raise InputError(self.out / INDEX, "no tile has finished yet")
        origin = parts[0].cloud.origin
        xyz = np.concatenate([(p.cloud.world_xyz - origin).astype(np.float32) for p in parts])
        rgb = None if any(p.cloud.rgb is None for p in parts) else np.concatenate([p.cloud.rgb for p in parts])
        names = set.intersection(*(set(p.cloud.fields) for p in parts))
        fields = {k: np.concatenate([p.cloud.fields[k] for p in parts]) for k in sorted(names)}
        cloud = PointCloud(xyz, rgb=rgb, fields=fields, origin=origin, source=str(self.out / INDEX))
        return FeatureCloud(cloud, np.concatenate([p.features for p in parts]),
                            np.concatenate([p.weight for p in parts]), np.concatenate([p.view_count for p in parts]),
                            encoder=parts[0].encoder, class_names=parts[0].class_names,
                            meta={"lod_of": self.index.points, "voxel": voxel}, basis=parts[0].basis)


def _voxel_pick(xyz: np.ndarray, voxel: float) -> np.ndarray:
    """Index of the first point in each occupied voxel (deterministic, not random)."""
    q = np.floor(xyz / voxel).astype(np.int64)
    q -= q.min(0)
    key = (q[:, 0] * (q[:, 1].max() + 1) + q[:, 1]) * (q[:, 2].max() + 1) + q[:, 2]
    _, first = np.unique(key, return_index=True)
    return np.sort(first)
