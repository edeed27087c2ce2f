"""Views: posed RGB-D frames and rendered views of bare clouds and meshes, all as ``View``s."""
from .cameras import PlannedCamera, look_at, make_camera
from .frames import backproject, cloud_from_frames, frame_view, frame_views, organized_view, select_frames
from .planner import coverage, detect_kind, plan_cameras, visible_points
from .make import ViewJob, make_views, scene_cloud, view_jobs
from .render import attribute_map, render_view
from .sheet import contact_sheet, save_view
from .zoom import zoom_view, zoom_views, zoom_windows

__all__ = ["PlannedCamera", "look_at", "make_camera", "backproject", "cloud_from_frames", "frame_view",
           "frame_views", "organized_view", "select_frames", "coverage", "detect_kind", "plan_cameras",
           "visible_points", "attribute_map", "render_view", "make_views", "ViewJob", "scene_cloud", "view_jobs", "contact_sheet", "save_view",
           "zoom_view", "zoom_views", "zoom_windows"]
