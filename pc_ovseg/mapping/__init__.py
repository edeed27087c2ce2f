"""Robot mapping: posed RGB-D frames (a folder, a manifest, a ROS bag or a live camera) streamed
into a semantic voxel map that answers queries at any time (docs/mapping.md)."""
from .semantic_map import SemanticMap, encoder_view
from .stream import MapStream, map_input, open_frames

__all__ = ["SemanticMap", "MapStream", "map_input", "open_frames", "encoder_view"]
