"""``run``: input -> views -> 2D features -> fusion -> labels, cached per view and resumable.

Layout of an output folder:
    cache/plan_<hash>.json                         the planned cameras of a bare cloud / mesh
    cache/cloud_<hash>.npz                         the cloud built from RGB-D depth
    cache/<scene+views>/feat-<encoder>/<view>.npz  each view's 2D features
    cache/<scene+views>/vis-<fusion>/<view>.npz    each view's visibility + weights
    fused.npz                                      FeatureCloud (query / view / distill read it)
    labels.ply, labels.las, labels.npz             per-point label + score, coloured by label
    legend.png, summary.json
The cache keys hash the input's content (not its path) and the RunConfig parts that change a
result: a rerun skips every view whose files exist, a changed input or setting gets fresh
entries, and changing only fusion settings reuses every view's 2D features.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import KINDS, RunConfig, ViewsConfig
from .data import FeatureCloud, FrameSequence, Mesh, PointCloud
from .encoders import load_view_features, save_view_features, view_features_dim
from .errors import InputError
from .export import export_labels
from .fusion import FeatureFusion, Visibility, view_visibility
from .store import atomic_write, cached, digest, write_json
from .views import ViewJob, scene_cloud, view_jobs
from .views.make import cloud_frame_ids, plan_kind


@dataclass
class Scene:
    """What the pipeline works on: the points to label, the views that see them, which views
    those are (``kind``: "frames", "organized" or the camera plan's kind), and a digest of the
    content both come from (the cache key's input part)."""

    cloud: PointCloud
    jobs: list[ViewJob]
    mesh: Mesh | None = None
    frames: FrameSequence | None = None
    kind: str = ""
    digest: str = ""


def load_scene(path: str, cfg: ViewsConfig | None = None, *, plan_cache: str | Path | None = None,
               progress: bool = True) -> Scene:
    """Read any supported input and decide its views (:func:`scene_from`)."""
    from . import io
    cfg = cfg or ViewsConfig()
    return scene_from(io.read(path, layout=cfg.layout), cfg, plan_cache=plan_cache, progress=progress, source=path)


def scene_from(data: FrameSequence | Mesh | PointCloud, cfg: ViewsConfig | None = None, *,
               cloud: PointCloud | None = None, plan_cache: str | Path | None = None, progress: bool = True,
               source: str | None = None) -> Scene:
    """Decide the views of what a reader returned (frames selected, bare clouds planned with the
    kind detected once, so the plan is the one reported). ``cloud`` is the point set to label
    when the caller has one (a benchmark scene's annotated vertices seen by the dataset's frames);
    otherwise a cloud built from RGB-D depth is kept in ``plan_cache``: building it reads every
    frame it uses."""
    cfg = cfg or ViewsConfig()
    frames_digest = _frames_digest(data) if isinstance(data, FrameSequence) else None
    if cloud is None and frames_digest and not cfg.cloud and plan_cache is not None:
        cloud = _built_cloud(data, cfg, frames_digest, Path(plan_cache), progress)
    elif cloud is None:
        cloud = scene_cloud(data, cfg, progress=progress)
    if len(cloud) == 0:
        raise InputError(source or getattr(data, "source", None), "no points to label")
    kind = plan_kind(data, cfg)
    plan_cfg = replace(cfg, kind=kind) if cfg.kind != kind and kind in KINDS else cfg
    jobs = view_jobs(data, cloud, plan_cfg, plan_cache=plan_cache, progress=progress)
    parts = [cloud.xyz, np.asarray(cloud.origin, np.float64)]
    if isinstance(data, Mesh):
        parts += [data.vertices, data.faces]
    if frames_digest:
        parts += [frames_digest]
    elif cloud.rgb is not None:
        parts.append(cloud.rgb)
    return Scene(cloud, jobs, mesh=data if isinstance(data, Mesh) else None,
                 frames=data if isinstance(data, FrameSequence) else None, kind=kind, digest=digest(*parts))


def _built_cloud(frames: FrameSequence, cfg: ViewsConfig, frames_digest: str, cache: Path,
                 progress: bool) -> PointCloud:
    """scene_cloud(frames), read from / written to ``cache``, keyed by the frames' content and the
    cloud settings (voxel size, which frames); a damaged file is built again."""
    key = digest(frames_digest, {"voxel_size": cfg.voxel_size, "frames": cloud_frame_ids(frames, cfg)})

    def read(path):
        with np.load(path) as z:
            return PointCloud(z["xyz"], z["rgb"] if "rgb" in z else None, origin=z["origin"], source=frames.source)

    def write(tmp, cloud):
        np.savez(tmp, xyz=cloud.xyz, origin=cloud.origin, **({"rgb": cloud.rgb} if cloud.rgb is not None else {}))
    return cached(cache / f"cloud_{key}.npz", read, lambda: scene_cloud(frames, cfg, progress=progress), write)


def _frames_digest(frames: FrameSequence) -> str:
    """Cameras and names exactly; the image files by size and modification time (hashing every
    image would cost a full read of the sequence on each resume)."""
    parts = [frames.names, np.stack([np.concatenate([c.K.ravel(), c.cam_to_world.ravel()]) for c in frames.cameras])]
    src = frames.source
    if src and os.path.exists(src):
        root = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
        stats = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                st = os.stat(os.path.join(dirpath, f))
                stats.append((os.path.relpath(os.path.join(dirpath, f), root), st.st_size, st.st_mtime_ns))
        parts.append(sorted(stats))
    return digest(*parts)


@dataclass
class FuseStats:
    views: int = 0
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=lambda: {"views": 0.0, "2d": 0.0, "fusion": 0.0})
    extra: dict = field(default_factory=dict)
    view_files: list = field(default_factory=list)   # (visibility, features) cache file of each view

    def cached_views(self, progress: bool = False, desc: str = "views"):
        """(Visibility, ViewFeatures) of every view, read back from the cache one at a time."""
        from tqdm.auto import tqdm
        for vp, fp in tqdm(self.view_files, desc=desc, unit="view", disable=not progress):
            yield Visibility.load(vp), load_view_features(fp)


def fuse_scene(scene: Scene, view_encoder, cache_dir: str | Path, cfg: RunConfig | None = None, *,
               progress: bool = True) -> tuple[FeatureCloud, FuseStats]:
    """Make (or reuse) every view's visibility and features, then fuse them; resumable.

    One store per kind of entry: features keyed by scene, views and encoder; visibility by
    scene, views and fusion settings (its weights depend on them).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cfg = cfg or RunConfig()
    parts = cfg.cache_parts(view_encoder)
    root = Path(cache_dir) / digest(scene.digest, parts["views"], length=12)
    feat_dir, vis_dir = root / f"feat-{digest(parts['encoder'], length=8)}", root / f"vis-{digest(parts['fusion'], length=8)}"
    feat_dir.mkdir(parents=True, exist_ok=True)
    vis_dir.mkdir(parents=True, exist_ok=True)
    stats = FuseStats(views=len(scene.jobs))
    fusion: FeatureFusion | None = None
    n = len(scene.cloud)
    done: list[str] = []
    for job in tqdm(scene.jobs, desc="views", unit="view", disable=not progress):
        vp, fp = vis_dir / f"{job.name}.npz", feat_dir / f"{job.name}.npz"
        vis, dim = _cached(vp, fp, n)
        if vis is None or dim is None:
            t = time.perf_counter()
            view = job.make()
            vis = view_visibility(view, scene.cloud, cfg.fusion)
            stats.timings["views"] += time.perf_counter() - t
            if dim is None:
                t = time.perf_counter()
                feats = view_encoder.encode(view)
                stats.timings["2d"] += time.perf_counter() - t
                mask_s = ((getattr(feats, "meta", None) or {}).get("seconds") or {}).get("masks")
                if mask_s is not None:  # the mask source's own time, for summary.json
                    stats.extra["mask_seconds"] = stats.extra.get("mask_seconds", 0.0) + float(mask_s)
                    stats.extra["mask_views"] = stats.extra.get("mask_views", 0) + 1
                save_view_features(feats, fp)
                dim = feats.dim
            with atomic_write(vp) as tmp:
                vis.save(tmp)
            stats.computed += 1
        else:
            stats.cached += 1
        if fusion is None:
            fusion = FeatureFusion(n, dim, cfg.fusion)
        fusion.add_weights(vis)
        done.append(job.name)
        stats.view_files.append((vp, fp))
    if fusion is None:
        raise InputError(None, "no views to fuse")
    t = time.perf_counter()
    passes = iter(["fusing", "checking masks", "fusing again"])

    def cached_views():
        for name in tqdm(done, desc=next(passes, "fusing"), unit="view", disable=not progress):
            yield Visibility.load(vis_dir / f"{name}.npz"), load_view_features(feat_dir / f"{name}.npz")

    fusion.fuse_views(cached_views)
    encoder = getattr(view_encoder, "encoder", None)
    fc = fusion.result(scene.cloud, encoder=getattr(encoder, "spec", ""),
                       class_names=getattr(encoder, "class_names", None),
                       meta={"views": len(done), "cache": str(root), "config": cfg.to_dict()})
    stats.timings["fusion"] = time.perf_counter() - t
    stats.seconds = time.perf_counter() - t0
    return fc, stats


def _cached(vis_path: Path, feat_path: Path, n_points: int) -> tuple[Visibility | None, int | None]:
    """A view's cached visibility and feature dimension, or None for what is missing or damaged
    (a torn entry is recomputed, never trusted)."""
    vis = dim = None
    if feat_path.exists():
        try:
            dim = view_features_dim(feat_path)
        except InputError:
            dim = None
    if vis_path.exists():
        try:
            vis = Visibility.load(vis_path)
            if len(vis.point_ids) and int(vis.point_ids.max()) >= n_points:
                vis = None
        except (OSError, ValueError, KeyError, EOFError):
            vis = None
    return vis, dim



def ensemble_with_distilled(fused: FeatureCloud, ckpt, vocabulary: list[str], out: Path, *,
                            tta: int = 1, device: str | None = None, text_encoder=None) -> FeatureCloud:
    """OpenScene's 2D-3D ensemble: the distilled network predicts every point from geometry, and
    per point the feature (fused or predicted) with the higher best-class score is kept; points no
    view saw get the 3D prediction instead of staying unlabelled."""
    from .backbone.predict import ensemble, predict
    from .query import QueryEngine

    pred = predict(ckpt, fused.cloud, tta=tta, device=device)
    if pred.features.shape[1] != fused.features.shape[1]:
        raise InputError(getattr(ckpt, "source", ckpt), f"distilled model predicts {pred.features.shape[1]}-d "
                         f"features, the fused features are {fused.features.shape[1]}-d (another encoder?)")
    pred.encoder, pred.class_names = fused.encoder, fused.class_names
    pred.save(out / "distilled.npz")
    ens = ensemble(fused, pred, QueryEngine(fused, text_encoder=text_encoder).embed(list(vocabulary)))
    ens.save(out / "ensemble.npz")
    return ens


def instances_stage(fc: FeatureCloud, stats: FuseStats, out: Path, cfg: RunConfig, *, vocabulary=None,
                    text_encoder=None) -> dict:
    """3D instances from the cached views' masks (pc_ovseg.instances), exported beside the labels."""
    from .instances import export_instances, make_instances
    from .query import QueryEngine
    inst = make_instances(fc, lambda: stats.cached_views(), cfg.instances, progress=cfg.output.progress)
    engine = QueryEngine(fc, text_encoder=text_encoder) if vocabulary is not None else None
    return export_instances(out, fc, inst, vocabulary=vocabulary, engine=engine)


COMPRESS_SAMPLE = 200_000   # seen points a feature basis is fitted on (per scene, or over all tiles)


def run(path: str, out_dir: str | Path, cfg: RunConfig | None = None, *, view_encoder=None) -> dict:
    """The main job: fused features and labels for any input, resuming from ``out_dir/cache``.

    ``cfg.output.labels`` is the vocabulary; ``view_encoder`` replaces the one ``cfg.encoder``
    describes (oracle label maps, tests). Returns the summary also written to summary.json,
    with seconds per stage under ``timings``.
    """
    t0 = time.perf_counter()
    cfg = cfg or RunConfig()
    from .tiles import run_tiled, tile_budget
    budget = tile_budget(path, cfg.scale)
    if budget is not None:  # bigger than a tile: split, run tile by tile (pc_ovseg.tiles)
        return run_tiled(path, out_dir, cfg, budget=budget, view_encoder=view_encoder)
    from .labels import vocabulary
    # a bad vocabulary or checkpoint fails now, before any view; `instances` may run without one
    voc = vocabulary(cfg.output.labels) if cfg.output.labels or not cfg.instances.enabled else None
    if voc is None and cfg.output.distilled:
        raise InputError(None, "--distilled needs --labels (the ensemble keeps the better-scoring feature per class)")
    distilled = None
    if cfg.output.distilled:
        from .backbone.predict import load_model
        distilled = load_model(cfg.output.distilled)
    out = Path(out_dir)
    if view_encoder is None:  # weights, device and masks fail here, before the input is read
        view_encoder = cfg.encoder.build()
    t = time.perf_counter()
    scene = load_scene(path, cfg.views, plan_cache=out / "cache", progress=cfg.output.progress)
    t_load = time.perf_counter() - t
    fc, stats = fuse_scene(scene, view_encoder, out / "cache", cfg, progress=cfg.output.progress)
    if cfg.output.compress:
        from .fusion import compress, fit_basis, sample_rows
        fc = compress(fc, fit_basis(sample_rows(fc.features, COMPRESS_SAMPLE), cfg.output.compress))
    fc.save(out / "fused.npz")
    summary = {"input": str(path), "points": len(scene.cloud), "views": stats.views,
               "views_computed": stats.computed, "views_cached": stats.cached,
               "coverage": round(fc.coverage, 6), "kind": scene.kind, "encoder": fc.encoder,
               "fused": str(out / "fused.npz"),
               # which mask source ran and its time per view computed in this run (None: all were cached)
               "masks": {"source": getattr(getattr(view_encoder, "masks", None), "name", None),
                         "seconds_per_view": round(stats.extra["mask_seconds"] / stats.extra["mask_views"], 3)
                         if stats.extra.get("mask_views") else None,
                         "views_timed": stats.extra.get("mask_views", 0)}}
    t = time.perf_counter()
    text_encoder = getattr(view_encoder, "encoder", None)  # embed the labels with the model already loaded
    if distilled is not None:
        fc = ensemble_with_distilled(fc, distilled, voc["vocabulary"], out, tta=cfg.output.tta,
                                     device=cfg.encoder.device, text_encoder=text_encoder)
        summary.update(distilled=str(out / "distilled.npz"), ensemble=str(out / "ensemble.npz"),
                       coverage_ensemble=round(fc.coverage, 6))
    vocab = voc.pop("vocabulary") if voc else None
    if vocab is not None:
        summary.update(export_labels(out, fc, vocab, **voc, formats=tuple(cfg.output.formats),
                                     result=out / ("ensemble.npz" if distilled is not None else "fused.npz"),
                                     text_encoder=text_encoder))
    timings = {"views": t_load + stats.timings["views"], "2d": stats.timings["2d"],
               "fusion": stats.timings["fusion"], "labels": time.perf_counter() - t}
    if cfg.instances.enabled:
        t = time.perf_counter()
        summary.update(instances_stage(fc, stats, out, cfg, vocabulary=vocab,
                                       text_encoder=text_encoder))
        timings["instances"] = time.perf_counter() - t
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["config"] = cfg.to_dict()
    write_json(out / "summary.json", summary)
    return summary
