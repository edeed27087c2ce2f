"""Zoomed crops of a view: the multi-granularity views of a scene that has a single camera.

An organised cloud (one Kinect frame) has exactly one real view. Cropping it and enlarging the
crop back to full size gives the 2D model the same surfaces at a finer scale (small objects get
more pixels and patches) and gives fusion independent second and third opinions: a 2D mask
that is wrong in one crop is usually right in the whole frame and in the overlapping crops.
No geometry is invented: every crop pixel is a pixel of the original view.
"""
from __future__ import annotations

import numpy as np

from ..data import Camera, View


def zoom_view(view: View, top: int, left: int, height: int, width: int, zoom: int) -> View:
    """The ``height`` x ``width`` window at (top, left) of ``view``, enlarged ``zoom`` times."""
    z = int(zoom)
    H, W = view.hw
    if not (0 <= top and 0 <= left and top + height <= H and left + width <= W and z >= 1):
        raise ValueError(f"crop {top},{left} {height}x{width} does not fit a {H}x{W} view")
    win = np.s_[top:top + height, left:left + width]
    rgb = _enlarge_rgb(view.rgb[win], z)
    depth = np.repeat(np.repeat(view.depth[win], z, 0), z, 1) if view.depth is not None and view.depth.size else view.depth
    index = np.repeat(np.repeat(view.index[win], z, 0), z, 1)
    pix = np.asarray(view.pixels)
    inside = (pix[:, 0] >= top) & (pix[:, 0] < top + height) & (pix[:, 1] >= left) & (pix[:, 1] < left + width)
    new_pix = ((pix[inside] - [top, left]) * z + z // 2).astype(np.int32)
    K = view.camera.K.copy()
    K[0, 0] *= z; K[1, 1] *= z
    K[0, 2] = (K[0, 2] - left + 0.5) * z - 0.5
    K[1, 2] = (K[1, 2] - top + 0.5) * z - 0.5
    cam = Camera(K, view.camera.cam_to_world.copy(), width * z, height * z)
    name = f"{view.name}_z{z}_{top}_{left}"
    return View(cam, rgb, depth, index, np.asarray(view.point_ids)[inside], new_pix, name=name, granularity="close",
                meta=dict(view.meta, zoom=z, crop=(top, left, height, width)))


def zoom_windows(height: int, width: int, zoom: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows (top, left, h, w) of 1/zoom the size, at half-window strides: every
    pixel away from the border lies in several of them (a 3 x 3 grid at zoom 2)."""
    z = int(zoom)
    if z <= 1:
        return []
    h, w = height // z, width // z
    steps = 2 * z - 1
    tops = np.linspace(0, height - h, steps).round().astype(int)
    lefts = np.linspace(0, width - w, steps).round().astype(int)
    return [(int(t), int(l), h, w) for t in tops for l in lefts]


def zoom_views(view: View, zoom: int = 2) -> list[View]:
    """``view``'s overlapping crops at ``zoom`` (empty for zoom <= 1), each at the view's resolution."""
    return [zoom_view(view, *win, zoom) for win in zoom_windows(*view.hw, zoom)]


def _enlarge_rgb(rgb: np.ndarray, z: int) -> np.ndarray:
    """Bilinear enlargement (what a 2D model should see), nearest where PIL is missing."""
    if z == 1:
        return rgb.copy()
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return np.repeat(np.repeat(rgb, z, 0), z, 1)
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((w * z, h * z), Image.BILINEAR))
