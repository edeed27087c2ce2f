"""One path from any input (posed frames, organised frame, cloud, mesh) to its views.

``view_jobs`` decides which views exist (selected frames, an organised cloud's camera and its
zoomed crops, or planned cameras) without making any; each ``ViewJob.make()`` renders, projects
or crops on use, so ``render``, ``run``, ``fuse`` and the oracle all see the same views and a
resumed run makes only the views it lacks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..data import Camera, FrameSequence, Mesh, PointCloud, View
from ..errors import InputError
from .frames import BORDER, KINECT_K, cloud_from_frames, frame_views, organized_view, select_frames
from .planner import detect_kind, plan_cameras
from .render import render_view
from .zoom import zoom_view, zoom_windows


@dataclass
class ViewJob:
    """A view not yet made: its name and how to make it."""

    name: str
    make: Callable[[], View]


def scene_cloud(source: FrameSequence | Mesh | PointCloud, cfg=None, *, progress: bool = True) -> PointCloud:
    """The points a run labels: the cloud itself, a mesh's vertices, or for posed frames
    ``cfg.cloud`` when given, else a cloud built from the depth of ``cloud_frame_ids``."""
    from ..config import ViewsConfig
    cfg = cfg or ViewsConfig()
    if isinstance(source, FrameSequence):
        if cfg.cloud:
            from ..io import read_cloud
            return read_cloud(cfg.cloud, layout=cfg.layout)
        frames = source.subset(cloud_frame_ids(source, cfg))
        border = BORDER if cfg.cloud_frames == "selected" else 0   # only pixels the views test
        return cloud_from_frames(frames, voxel_size=cfg.voxel_size, border=border, progress=progress)
    return source.to_point_cloud() if isinstance(source, Mesh) else source


def cloud_frame_ids(frames: FrameSequence, cfg) -> list[int]:
    """The frames a built cloud comes from (``cfg.cloud_frames``): by default those the views use,
    so every point is seen by some view and no time goes on frames no view reads; "all", or N
    evenly chosen."""
    if cfg.cloud_frames == "all":
        return list(range(len(frames)))
    return select_frames(frames, max_views=cfg.max_views if cfg.cloud_frames == "selected" else cfg.cloud_frames)


def plan_kind(source: FrameSequence | Mesh | PointCloud, cfg) -> str:
    """Which views an input gets: "frames" (posed RGB-D), "organized" (one organised frame, its
    own camera) or the camera plan's kind (``cfg.kind``, detected when "auto")."""
    if isinstance(source, FrameSequence):
        return "frames"
    if isinstance(source, PointCloud) and source.grid_shape is not None:
        return "organized"
    return detect_kind(source) if cfg.kind == "auto" else cfg.kind


def view_jobs(source: FrameSequence | Mesh | PointCloud, cloud: PointCloud, cfg=None, *,
              plan_cache: str | Path | None = None, intrinsics: np.ndarray | None = None,
              stride: int | None = None, attribute: str | None = None, cameras: list | None = None,
              progress: bool = False) -> list[ViewJob]:
    """The views that will see ``cloud`` (``cfg``: a ViewsConfig): selected frames; an organised
    cloud's own camera plus its 3x3 crops enlarged ``cfg.zoom`` times (a single frame needs a
    second opinion; zoom=1 turns them off); or cameras planned over a bare cloud or mesh (kept in
    ``plan_cache`` when given, so a resumed run does not plan again; ``cameras`` skips planning)."""
    from ..config import ViewsConfig
    cfg = cfg or ViewsConfig()
    if isinstance(source, FrameSequence):
        idx = select_frames(source, max_views=cfg.max_views, stride=stride)
        return [ViewJob(_safe(source.names[i]), _frame_job(source, cloud, i)) for i in idx]
    if isinstance(source, PointCloud) and source.grid_shape is not None:
        K = KINECT_K if intrinsics is None else np.asarray(intrinsics)
        base = ViewJob("organized", lambda: organized_view(source, K))
        wins = zoom_windows(source.grid_shape[0], source.grid_shape[1], cfg.zoom)
        jobs = [base] + [ViewJob(f"organized_z{cfg.zoom}_{w[0]}_{w[1]}", _zoom_job(base, w, cfg.zoom)) for w in wins]
        return jobs[: cfg.max_views] if cfg.max_views else jobs
    if cameras is None:
        plan_kw = dict(kind=cfg.kind, max_views=cfg.max_views, width=cfg.width, height=cfg.height)
        if cfg.min_views is not None:
            plan_kw["min_views"] = cfg.min_views
        cameras = _cached_plan(source, plan_kw, plan_cache, progress)
    else:
        cameras = [c if isinstance(c, tuple) else (c, "scene") for c in cameras][: cfg.max_views or None]
    return [ViewJob(f"view{i:04d}_{g}", _render_job(source, cam, g, attribute)) for i, (cam, g) in enumerate(cameras)]


def make_views(source: FrameSequence | PointCloud | Mesh, *, cloud: PointCloud | None = None,
               cameras: list | None = None, attribute: str | None = None, progress: bool = True,
               **cfg_fields) -> Iterator[View]:
    """The views of ``source`` as ``view_jobs`` makes them (keywords: ViewsConfig fields)."""
    from ..config import ViewsConfig
    from .frames import _progress
    if not isinstance(source, (FrameSequence, PointCloud, Mesh)):
        raise TypeError(f"make_views needs frames, a cloud or a mesh, got {type(source).__name__}")
    cfg = ViewsConfig(**cfg_fields)
    cloud = cloud if cloud is not None else scene_cloud(source, cfg, progress=progress)
    jobs = view_jobs(source, cloud, cfg, attribute=attribute, cameras=cameras, progress=progress)
    for job in _progress(jobs, len(jobs), progress, "views"):
        yield job.make()


def _cached_plan(geom: Mesh | PointCloud, plan_kw: dict, cache: str | Path | None, progress: bool) -> list:
    """plan_cameras(geom, **plan_kw), read from / written to ``cache`` (keyed by geometry and settings)."""
    from ..store import cached, digest
    from .cameras import PlannedCamera

    if cache is None:
        return plan_cameras(geom, progress=progress, **plan_kw)
    parts = (geom.vertices, geom.faces) if isinstance(geom, Mesh) else (geom.xyz,)
    return cached(Path(cache) / f"plan_{digest(plan_kw, *parts, np.asarray(geom.origin))}.json",
                  lambda p: [(PlannedCamera.from_dict(c), c["granularity"]) for c in json.loads(p.read_text())],
                  lambda: plan_cameras(geom, progress=progress, **plan_kw),
                  lambda p, cams: p.write_text(json.dumps([{**cam.to_dict(), "granularity": g} for cam, g in cams])))


def _frame_job(frames: FrameSequence, cloud: PointCloud, i: int) -> Callable[[], View]:
    return lambda: next(iter(frame_views(frames.subset([i]), cloud, progress=False)))


def _zoom_job(base: ViewJob, win: tuple[int, int, int, int], zoom: int) -> Callable[[], View]:
    return lambda: zoom_view(base.make(), *win, zoom)


def _render_job(geom, cam: Camera, granularity: str, attribute: str | None) -> Callable[[], View]:
    if attribute is not None and attribute not in getattr(geom, "fields", {}):
        raise InputError(getattr(geom, "source", None), f"no per-point field {attribute!r}")
    return lambda: render_view(geom, cam, granularity=granularity, attribute=attribute)


def _safe(name: str) -> str:
    import os
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(str(name)))
