"""Feeding a SemanticMap: from any posed RGB-D input (``map_input``, what ``pc-ovseg map`` runs)
or from a live camera's callback (``MapStream``)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import MappingConfig
from ..data import RGBDFrame
from .semantic_map import SemanticMap

MAP_FILE = "map.npz"


def open_frames(path, cfg: MappingConfig | None = None) -> tuple[Iterator[RGBDFrame], int, dict]:
    """(frames, how many, what was read) of any input the readers know: an RGB-D folder or
    manifest (pc_ovseg.io) or a ROS 1 / ROS 2 bag (pc_ovseg.io.rosbag); every ``cfg.every``-th."""
    from ..io import rosbag
    cfg = cfg or MappingConfig()
    if rosbag.is_rosbag(path):
        bag = rosbag.open_bag(path, topics=cfg.topics, sync=cfg.sync, world_frame=cfg.world_frame,
                              camera_frame=cfg.camera_frame)
        idx = range(0, len(bag), cfg.every)
        return bag.iter_frames(idx), len(idx), {"source": "rosbag", **bag.summary()}
    import re
    import warnings

    from ..io import read_frames
    with warnings.catch_warnings(record=True) as caught:  # the readers skip frames of lost tracking
        warnings.simplefilter("always")
        seq = read_frames(path)
    skipped = sum(int(m.group(1)) for w in caught
                  for m in [re.search(r"skipped (\d+) frames with invalid", str(w.message))] if m)
    if not seq.has_depth:
        from ..errors import InputError
        raise InputError(seq.source, "frames have no depth: a map is built from depth")
    idx = range(0, len(seq), cfg.every)
    return (seq[i] for i in idx), len(idx), {"source": "frames", "frames": len(seq), "skipped_invalid_pose": skipped}


def map_input(path, out_dir, cfg: MappingConfig | None = None, encoder_cfg=None, *, encoder=None,
              fusion=None, progress: bool = True, geometry_only: bool = False) -> dict:
    """Stream ``path`` into a SemanticMap written to ``out_dir/map.npz`` (snapshots on the way,
    every ``cfg.snapshot_every`` frames); the 2D model (``encoder``, else ``encoder_cfg.build()``)
    runs on keyframes in a worker thread. Returns the summary also written to summary.json."""
    from tqdm.auto import tqdm

    from ..store import write_json
    cfg = cfg or MappingConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    frames, total, source = open_frames(path, cfg)       # bad input fails before any model loads
    if encoder is None and not geometry_only:
        from ..config import EncoderConfig
        encoder = (encoder_cfg or EncoderConfig()).build()
    out.mkdir(parents=True, exist_ok=True)
    smap = SemanticMap(cfg.voxel_size, config=cfg, encoder=encoder, fusion=fusion, snapshot_path=out / MAP_FILE)
    with smap, tqdm(frames, total=total, desc="mapping", unit="frame", disable=not progress) as bar:
        for frame in bar:
            smap.add_rgbd(frame)
            bar.set_postfix(voxels=smap.size, keyframes=len(smap.keyframes), refresh=False)
    smap.save(out / MAP_FILE)
    info = smap.info()
    skipped = dict(info["skipped"])
    skipped["invalid_pose"] += int(source.pop("skipped_invalid_pose", 0))
    summary = {"input": str(path), "map": str(out / MAP_FILE), "voxels": smap.size, "frames": smap.frames,
               "keyframes": len(smap.keyframes), "skipped": skipped, "encoder": smap.encoder_spec,
               "bytes_per_voxel": info["bytes_per_voxel"], "update_ms_median": info["update_ms_median"],
               "voxels_dropped": info["voxels_dropped"], "seconds": round(time.perf_counter() - t0, 3),
               "input_info": source, "config": vars(cfg).copy()}
    write_json(out / "summary.json", summary)
    return summary


class MapStream:
    """A live camera's callback into a SemanticMap: ``stream(rgb, depth, cam_to_world)`` from the
    driver's thread (intrinsics fixed at construction or given per call); queries run from any
    other thread on the same map. The map is ``live`` (a slow 2D model drops keyframes, never
    frames); ``save_every`` seconds the map is written to ``path`` (atomically) in the background.

        with MapStream(SemanticMap(0.05, encoder=enc, live=True), K, path="map.npz") as stream:
            camera.on_frame(lambda rgb, depth, pose: stream(rgb, depth, pose))
            ...
            labels = stream.map.labels(["floor", "chair"])
    """

    def __init__(self, smap: SemanticMap, K=None, *, path=None, save_every: float = 30.0):
        self.map = smap
        self.map.live = True
        self.K = None if K is None else np.asarray(K, np.float64)
        self.path = None if path is None else os.fspath(path)
        self.save_every = float(save_every)
        self._stop = threading.Event()
        self._saver = None
        if self.path and self.save_every > 0:
            self._saver = threading.Thread(target=self._save_loop, name="pc_ovseg-map-saver", daemon=True)
            self._saver.start()

    def __call__(self, rgb, depth, cam_to_world, K=None, *, features=None, name: str | None = None) -> bool:
        K = self.K if K is None else K
        if K is None:
            raise ValueError("intrinsics K are needed (at construction or per frame)")
        return self.map.add_frame(rgb, depth, K, cam_to_world, features, name=name)

    def _save_loop(self) -> None:
        seen = -1
        while not self._stop.wait(self.save_every):
            if self.map.frames != seen:
                seen = self.map.frames
                self.map.save(self.path, finish=False)

    def close(self) -> None:
        self._stop.set()
        if self._saver is not None:
            self._saver.join()
        self.map.close()
        if self.path:
            self.map.save(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
