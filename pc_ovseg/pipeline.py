"""``run``: input -> views -> 2D features -> fusion -> labels, cached per view and resumable.

Layout of an output folder:
    cache/plan_<hash>.json                  the planned cameras of a bare cloud / mesh
    cache/<settings-hash>/vis/<view>.npz    visibility + weights of each view   (pass 1)
    cache/<settings-hash>/feat/<view>.npz   the view's 2D features               (pass 1)
    fused.npz                               FeatureCloud (query / view / distill read it)
    labels.ply, labels.las, labels.npz      per-point label + score, coloured by label
    legend.png, summary.json
A rerun with the same settings skips every view whose files exist, so an interrupted run
resumes where it stopped; changing the encoder or view settings starts a fresh cache folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import Camera, FeatureCloud, FrameSequence, Mesh, PointCloud, View
from .errors import InputError
from .encoders import load_view_features, save_view_features
from .fusion import FeatureFusion, FusionConfig, Visibility, view_visibility

#: Kinect / PrimeSense defaults for organised clouds that carry no intrinsics (mOSD, PCL grabbers).
KINECT_K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])


@dataclass
class ViewJob:
    """A view not yet made: its name and how to make it (rendering/loading happens lazily)."""

    name: str
    make: Callable[[], View]


@dataclass
class Scene:
    """What the pipeline works on: the points to label and the views that see them."""

    cloud: PointCloud
    jobs: list[ViewJob]
    mesh: Mesh | None = None
    frames: FrameSequence | None = None
    kind: str = ""


def view_jobs(source: FrameSequence | Mesh | PointCloud, cloud: PointCloud, *, max_views: int | None = None,
              kind: str = "auto", width: int = 640, height: int = 480, stride: int | None = None,
              intrinsics: np.ndarray | None = None, min_views: int | None = None,
              zoom: int = 2, plan_cache: str | Path | None = None) -> list[ViewJob]:
    """The views that will see ``cloud``: selected frames, the organised cloud's own camera (plus
    its overlapping crops enlarged ``zoom`` times: a single frame needs them for a second opinion;
    zoom=1 turns them off), or planned virtual cameras over a bare cloud or mesh (kept in
    ``plan_cache`` when given, so a resumed run does not plan again)."""
    from . import views

    if isinstance(source, FrameSequence):
        idx = views.select_frames(source, max_views=max_views, stride=stride)
        return [ViewJob(_safe(source.names[i]), _frame_job(source, cloud, i)) for i in idx]
    if isinstance(source, PointCloud) and source.grid_shape is not None:
        K = KINECT_K if intrinsics is None else np.asarray(intrinsics)
        base = ViewJob("organized", lambda: views.organized_view(source, K))
        wins = views.zoom_windows(source.grid_shape[0], source.grid_shape[1], zoom)
        return [base] + [ViewJob(f"organized_z{zoom}_{win[0]}_{win[1]}", _zoom_job(base, win, zoom)) for win in wins]
    plan_kw = dict(kind=kind, max_views=max_views, width=width, height=height)
    if min_views is not None:
        plan_kw["min_views"] = min_views
    cams = _cached_plan(source, plan_kw, plan_cache)
    return [ViewJob(f"view{i:04d}_{g}", _render_job(source, cam, g)) for i, (cam, g) in enumerate(cams)]


def _cached_plan(geom: Mesh | PointCloud, plan_kw: dict, cache: str | Path | None) -> list:
    """plan_cameras(geom, **plan_kw), read from / written to ``cache`` (keyed by geometry and settings)."""
    from . import views
    from .views.cameras import PlannedCamera

    if cache is None:
        return views.plan_cameras(geom, **plan_kw)
    h = hashlib.sha1(json.dumps(plan_kw, sort_keys=True, default=str).encode())
    for a in ((geom.vertices, geom.faces) if isinstance(geom, Mesh) else (geom.xyz,)) + (geom.origin,):
        h.update(np.ascontiguousarray(a).tobytes())
    path = Path(cache) / f"plan_{h.hexdigest()[:16]}.json"
    if path.exists():
        try:
            return [(PlannedCamera.from_dict(c), c["granularity"]) for c in json.loads(path.read_text())]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged plan is planned again
    cams = views.plan_cameras(geom, **plan_kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{**cam.to_dict(), "granularity": g} for cam, g in cams]))
    os.replace(tmp, path)
    return cams


def load_scene(path: str, *, cloud_path: str | None = None, layout: str | None = None,
               voxel_size: float = 0.02, **view_kw) -> Scene:
    """Read any supported input and plan its views (frames are selected, bare clouds get cameras)."""
    from . import io, views

    data = io.read(path, layout=layout)
    if isinstance(data, FrameSequence):
        cloud = io.read_cloud(cloud_path, layout=layout) if cloud_path else views.cloud_from_frames(data, voxel_size=voxel_size)
        return Scene(cloud, view_jobs(data, cloud, **view_kw), frames=data, kind="frames")
    cloud = data.to_point_cloud() if isinstance(data, Mesh) else data
    if len(cloud) == 0:
        raise InputError(path, "no points to label")
    return Scene(cloud, view_jobs(data, cloud, **view_kw), mesh=data if isinstance(data, Mesh) else None,
                 kind=view_kw.get("kind", "auto"))


def _frame_job(frames: FrameSequence, cloud: PointCloud, i: int) -> Callable[[], View]:
    from . import views
    return lambda: next(iter(views.frame_views(frames.subset([i]), cloud, progress=False)))


def _zoom_job(base: ViewJob, win: tuple[int, int, int, int], zoom: int) -> Callable[[], View]:
    from . import views
    return lambda: views.zoom_view(base.make(), *win, zoom)


def _render_job(geom, cam: Camera, granularity: str) -> Callable[[], View]:
    from . import views
    return lambda: views.render_view(geom, cam, granularity=granularity)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(str(name)))


def _save_vis(path, vis: Visibility) -> None:
    tmp = str(path) + ".tmp.npz"
    vis.save(tmp)
    os.replace(tmp, path)


@dataclass
class FuseStats:
    views: int = 0
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def fuse_scene(scene: Scene, view_encoder, cache_dir: str | Path, *, fusion_cfg: FusionConfig | None = None,
               settings: dict | None = None, progress: bool = True) -> tuple[FeatureCloud, FuseStats]:
    """Make (or reuse) every view's visibility and features, then fuse them; resumable."""
    from tqdm.auto import tqdm

    t0 = time.time()
    cfg = fusion_cfg or FusionConfig()
    encoder = getattr(view_encoder, "encoder", None)
    enc_settings = getattr(view_encoder, "settings", None) or getattr(encoder, "spec", "")
    key = hashlib.sha1(json.dumps({"encoder": enc_settings,
                                   "settings": settings or {}, "fusion": vars(cfg)},
                                  sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = Path(cache_dir) / key
    (root / "vis").mkdir(parents=True, exist_ok=True)
    (root / "feat").mkdir(parents=True, exist_ok=True)
    stats = FuseStats(views=len(scene.jobs))
    fusion: FeatureFusion | None = None
    dim = None
    done: list[str] = []
    for job in tqdm(scene.jobs, desc="views", unit="view", disable=not progress):
        vp, fp = root / "vis" / f"{job.name}.npz", root / "feat" / f"{job.name}.npz"
        if vp.exists() and fp.exists():
            vis = Visibility.load(vp)
            stats.cached += 1
            if dim is None:
                dim = load_view_features(fp).dim
        else:
            view = job.make()
            vis = view_visibility(view, scene.cloud, cfg)
            feats = view_encoder.encode(view)
            save_view_features(feats, fp)
            _save_vis(vp, vis)
            dim = feats.dim
            stats.computed += 1
        if fusion is None:
            fusion = FeatureFusion(len(scene.cloud), dim, cfg)
        fusion.add_weights(vis)
        done.append(job.name)
    if fusion is None:
        raise InputError(None, "no views to fuse")
    passes = iter(["fusing", "checking masks", "fusing again"])

    def cached_views():
        for name in tqdm(done, desc=next(passes, "fusing"), unit="view", disable=not progress):
            yield Visibility.load(root / "vis" / f"{name}.npz"), load_view_features(root / "feat" / f"{name}.npz")

    fusion.fuse_views(cached_views)
    fc = fusion.result(scene.cloud, encoder=getattr(encoder, "spec", ""),
                       class_names=getattr(encoder, "class_names", None),
                       meta={"views": len(done), "cache": str(root)})
    stats.seconds = time.time() - t0
    return fc, stats


def export_labels(out_dir: str | Path, fc: FeatureCloud, vocabulary: list[str], *, class_ids=None,
                  las_codes: str = "shift", min_similarity=None, formats=("ply", "las", "npz")) -> dict:
    """Label every point over ``vocabulary`` and write PLY/LAS/NPZ + legend; returns a summary.

    ``label`` in PLY/NPZ is the class id (``class_ids[i]`` for vocabulary entry i, default i) and
    -1 where no view saw the point. LAS classification is one byte without a "none" value, so
    ``las_codes="shift"`` writes id + 1 with 0 = unseen ("never classified"), and
    ``las_codes="asprs"`` writes the ids themselves (ASPRS codes) with 1 = unseen ("unclassified").
    """
    from . import io
    from .colors import label_colors, save_legend
    from .query import QueryEngine

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = QueryEngine(fc).labels(vocabulary, min_similarity=min_similarity)
    ids = np.arange(len(vocabulary)) if class_ids is None else np.asarray(class_ids, np.int64)
    seen = res.labels >= 0
    labels = np.where(seen, ids[np.maximum(res.labels, 0)], -1).astype(np.int32)
    colors = label_colors(res.labels, len(vocabulary))
    if las_codes == "asprs":
        las_labels = np.where(seen, labels, 1)
    else:
        las_labels = np.where(seen, labels + 1, 0)
    written = []
    for fmt in formats:
        p = out / f"labels.{fmt}"
        io.write(p, fc.cloud, labels=las_labels if fmt == "las" else labels, scores=res.scores, colors=colors)
        written.append(str(p))
    save_legend(out / "legend.png", list(vocabulary), title="labels")
    hist = np.bincount(res.labels[seen], minlength=len(vocabulary))
    return {"files": written + [str(out / "legend.png")],
            "label_counts": {n: int(c) for n, c in zip(vocabulary, hist)},
            "class_ids": {n: int(i) for n, i in zip(vocabulary, ids)},
            "unseen": int((~seen).sum()), "points": len(res.labels)}


def ensemble_with_distilled(fused: FeatureCloud, ckpt, vocabulary: list[str], out: Path, *,
                            tta: int = 1) -> FeatureCloud:
    """OpenScene's 2D-3D ensemble: the distilled network predicts every point from geometry, and
    per point the feature (fused or predicted) with the higher best-class score is kept; points no
    view saw get the 3D prediction instead of staying unlabelled."""
    from .backbone.predict import ensemble, predict
    from .query import QueryEngine

    pred = predict(ckpt, fused.cloud, tta=tta)
    if pred.features.shape[1] != fused.features.shape[1]:
        raise InputError(getattr(ckpt, "source", ckpt), f"distilled model predicts {pred.features.shape[1]}-d features, "
                               f"the fused features are {fused.features.shape[1]}-d (another encoder?)")
    pred.encoder, pred.class_names = fused.encoder, fused.class_names
    pred.save(out / "distilled.npz")
    ens = ensemble(fused, pred, QueryEngine(fused).embed(list(vocabulary)))
    ens.save(out / "ensemble.npz")
    return ens


def run(path: str, out_dir: str | Path, vocabulary: list[str], *, class_ids=None, las_codes: str = "shift",
        distilled: str | None = None, tta: int = 1, view_encoder=None, encoder_args=None,
        max_views: int | None = None, cloud_path: str | None = None, fusion_cfg: FusionConfig | None = None,
        progress: bool = True, **scene_kw) -> dict:
    """The main job: fused features and labels for any input, resuming from ``out_dir/cache``."""
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if distilled:  # a bad checkpoint fails now, not after every view is computed
        from .backbone.predict import load_model
        distilled = load_model(distilled)
    scene = load_scene(path, cloud_path=cloud_path, max_views=max_views, plan_cache=out / "cache", **scene_kw)
    if view_encoder is None:
        from .encoders import view_encoder_from_args
        view_encoder = view_encoder_from_args(encoder_args, cache_dir=str(out / "cache" / "encoder"))
    settings = {"input": os.path.abspath(path), "max_views": max_views, "cloud": cloud_path,
                **{k: v for k, v in scene_kw.items() if v is not None}}
    fc, stats = fuse_scene(scene, view_encoder, out / "cache", fusion_cfg=fusion_cfg, settings=settings,
                           progress=progress)
    fc.save(out / "fused.npz")
    summary = {"input": str(path), "points": len(scene.cloud), "views": stats.views,
               "views_computed": stats.computed, "views_cached": stats.cached,
               "coverage": round(fc.coverage, 6), "encoder": fc.encoder, "fused": str(out / "fused.npz")}
    if distilled:
        fc = ensemble_with_distilled(fc, distilled, vocabulary, out, tta=tta)
        summary.update(distilled=str(out / "distilled.npz"), ensemble=str(out / "ensemble.npz"),
                       coverage_ensemble=round(fc.coverage, 6))
    summary.update(export_labels(out, fc, vocabulary, class_ids=class_ids, las_codes=las_codes))
    summary["seconds"] = round(time.time() - t0, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
