"""An oracle 2D model for posed frames: each frame's "prediction" is a fixed labelled cloud seen
from the frame's camera (its depth test and index map, ``views.frames.frame_view``), as a label
map in label space. The same encoder serves batch ``run`` (``encode(view)`` of its frame views)
and the streamed map (``encode`` of a keyframe's ``encoder_view``), so both fuse the same 2D
evidence and their labels can be compared voxel by voxel without CLIP."""
from __future__ import annotations

import numpy as np

from ..data import PointCloud, RGBDFrame, View


class ProjectedLabels:
    """``encode(view) -> ViewFeatures``: ``labels`` (ids into ``class_names``, -1 = none) of
    ``cloud`` projected into the view's camera, tested against the view's depth."""

    def __init__(self, cloud: PointCloud, labels: np.ndarray, class_names: list[str]):
        from ..encoders import get_encoder
        from ..store import digest
        self.cloud = cloud
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.class_names = list(class_names)
        self.encoder = get_encoder("labels:" + ",".join(self.class_names))
        self.settings = {"projected_labels": digest(cloud.xyz, self.labels, length=12), "classes": self.class_names}

    def encode(self, view: View):
        from ..encoders import label_map_features
        from ..oracle import gt_label_map
        from ..views.frames import frame_view
        depth = view.depth if view.depth is not None and view.depth.size and (view.depth > 0).any() else None
        seen = frame_view(RGBDFrame(view.camera, view.rgb, depth, view.name), self.cloud, name=view.name)
        C = len(self.class_names)
        return label_map_features(gt_label_map(seen, self.labels, C), C)


def block_labels(xyz: np.ndarray, num_classes: int, block: float = 0.6) -> np.ndarray:
    """A fixed labelling of space for tests and benchmarks: class of the ``block``-metre cube."""
    q = np.floor(np.asarray(xyz, np.float64) / block).astype(np.int64)
    return ((q[:, 0] + 2 * q[:, 1] + 3 * q[:, 2]) % num_classes).astype(np.int64)
