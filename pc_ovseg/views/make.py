"""One entry point from any source (posed frames, cloud, mesh) to Views."""
from __future__ import annotations

from typing import Iterator

from ..data import Camera, FrameSequence, Mesh, PointCloud, View
from .frames import _progress, cloud_from_frames, frame_views
from .planner import plan_cameras
from .render import render_view


def make_views(source: FrameSequence | PointCloud | Mesh, *, cloud: PointCloud | None = None,
               max_views: int | None = None, cameras: list | None = None, kind: str = "auto",
               width: int = 640, height: int = 480, attribute: str | None = None, progress: bool = True,
               **kw) -> Iterator[View]:
    """Views of ``source``: posed frames are projected (with ``cloud``, or a cloud built from their
    depth), clouds and meshes are rendered from ``cameras`` or from plan_cameras. Extra keywords go
    to frame_views (tolerances, stride, keyframes) or render_view (splat, shading, fill_holes)."""
    if isinstance(source, FrameSequence):
        cloud = cloud if cloud is not None else cloud_from_frames(source, progress=progress)
        yield from frame_views(source, cloud, max_views=max_views, progress=progress, **kw)
        return
    if not isinstance(source, (PointCloud, Mesh)):
        raise TypeError(f"make_views needs frames, a cloud or a mesh, got {type(source).__name__}")
    if cameras is None:
        cameras = plan_cameras(source, kind=kind, max_views=max_views, width=width, height=height,
                               progress=progress)
    elif max_views is not None:
        cameras = cameras[:max_views]
    for k, item in enumerate(_progress(cameras, len(cameras), progress, "render")):
        cam, gran = item if isinstance(item, tuple) else (item, "scene")
        assert isinstance(cam, Camera)
        yield render_view(source, cam, granularity=gran, attribute=attribute, name=f"view{k:03d}", **kw)
