"""Camera construction for planned and explicit views: look-at poses and field-of-view intrinsics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Camera


@dataclass
class PlannedCamera(Camera):
    """A Camera with a near clipping distance (metres along z).

    The planner uses ``near`` to cut away what lies between the camera and the part of the scene
    it is meant to show, e.g. the ceiling above a top-down view of a room.
    """

    near: float = 1e-3

    def to_dict(self) -> dict:
        return {**super().to_dict(), "near": float(self.near)}

    @classmethod
    def from_dict(cls, d: dict) -> "PlannedCamera":
        return cls(np.array(d["K"]), np.array(d["cam_to_world"]), d["width"], d["height"],
                   float(d.get("near", 1e-3)))


def intrinsics(width: int, height: int, hfov_deg: float = 60.0) -> np.ndarray:
    """Square-pixel K with the given horizontal field of view, principal point at the centre."""
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) looking from eye to target."""
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= max(np.linalg.norm(z), 1e-12)
    up = np.asarray(up, np.float64)
    if abs(np.dot(z, up / np.linalg.norm(up))) > 0.999:  # looking along `up`: pick another reference
        up = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def make_camera(eye, target, *, width: int = 640, height: int = 480, hfov_deg: float = 60.0,
                near: float = 1e-3, up=(0.0, 0.0, 1.0)) -> PlannedCamera:
    return PlannedCamera(intrinsics(width, height, hfov_deg), look_at(eye, target, up), width, height, near)


def camera_near(camera: Camera) -> float:
    return float(getattr(camera, "near", 1e-3))


def camera_from_dict(d: dict) -> Camera:
    return PlannedCamera.from_dict(d) if "near" in d else Camera.from_dict(d)
