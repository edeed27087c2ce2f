"""pc_ovseg: open-vocabulary 3D segmentation of point clouds and meshes.

Pipeline, one module per stage:
    io -> views -> encoders -> fusion -> backbone -> query -> eval
"""
from .data import Camera, FrameSequence, Mesh, PointCloud, RGBDFrame, View
from .errors import InputError, PcOvsegError, WeightsError

__version__ = "0.1.0"
__all__ = ["Camera", "FrameSequence", "Mesh", "PointCloud", "RGBDFrame", "View",
           "InputError", "PcOvsegError", "WeightsError", "__version__"]
