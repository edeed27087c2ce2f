"""SensatUrban in the layout it ships in: ``train/<tile>.ply`` and ``test/<tile>.ply``.

A tile is one binary PLY of photogrammetric points with vertex properties ``x y z red green
blue`` and, in ``train/``, ``class`` (uint8, the label id 0..12 of ``sensaturban13`` itself:
ground, high vegetation, buildings, walls, bridge, parking, rail, traffic roads, street
furniture, cars, footpath, bikes, water). A scene is one tile, named by its file stem.

Splits as SensatUrban's own code (main_SensatUrban.py) makes them: ``val`` is the four official
tiles birmingham_block_1, birmingham_block_5, cambridge_block_10 and cambridge_block_7 of
``train/``; ``train`` the other tiles of ``train/``; ``test`` the tiles of ``test/``, whose labels
are hidden (all -1; the benchmark scores them online). A train/ tile without ``class`` is an
error, not an unlabelled scene. No frames: views are rendered from the points.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..data import Mesh, PointCloud
from ..errors import InputError
from ..io.ply import read_ply
from .base import Dataset, GTScene, register_dataset
from .s3dis import natural_key

VAL_TILES = ("birmingham_block_1", "birmingham_block_5", "cambridge_block_10", "cambridge_block_7")
NUM_CLASSES = 13


@register_dataset("sensaturban")
class SensatUrban(Dataset):
    dataset_name = "sensaturban"
    labelsets = ("sensaturban13",)
    splits = ("train", "val", "test")
    has_frames = False
    benchmark_format = None

    def _tiles(self, folder: str) -> list[str]:
        d = os.path.join(self.root, folder)
        if not os.path.isdir(d):
            return []
        return sorted((f[:-4] for f in os.listdir(d) if f.endswith(".ply") and not f.startswith(".")), key=natural_key)

    def scenes(self, split: str) -> list[str]:
        self.check_split(split)
        if split == "test":
            found = self._tiles("test")
        else:
            tiles = self._tiles("train")
            found = [t for t in VAL_TILES if t in tiles] if split == "val" else [t for t in tiles if t not in VAL_TILES]
            if split == "val" and found and len(found) < len(VAL_TILES):
                missing = [t for t in VAL_TILES if t not in found]
                warnings.warn(f"{self.root}: train/ lacks the val tiles {', '.join(missing)}; scoring {len(found)} of 4")
        if not found:
            folder = "test" if split == "test" else "train"
            raise InputError(self.root, f"no {split} tile (.ply) in {folder}/")
        return found

    def tile_path(self, name: str) -> tuple[str, bool]:
        """(path, is a test tile) of a tile name."""
        for folder in ("train", "test"):
            p = os.path.join(self.root, folder, f"{name}.ply")
            if os.path.isfile(p):
                return p, folder == "test"
        raise InputError(self.root, f"tile {name!r} is not in train/ or test/")

    def load(self, name: str) -> GTScene:
        path, test = self.tile_path(name)
        geom = read_ply(path)
        cloud = geom.to_point_cloud() if isinstance(geom, Mesh) else geom
        cls = cloud.fields.pop("class", None)
        n = len(cloud)
        if cls is None:
            if not test:
                raise InputError(path, "has no vertex property 'class' (train/ tiles carry the label id 0..12)")
            labels = np.full(n, -1, np.int64)
        else:
            cls = np.asarray(cls)
            if cls.dtype.kind == "f":
                if not np.all(np.isfinite(cls) & (cls == np.rint(cls))):
                    raise InputError(path, "vertex property 'class' holds non-integer values")
            labels = cls.astype(np.int64)
            bad = (labels < 0) | (labels >= NUM_CLASSES)
            if bad.any():
                raise InputError(path, f"vertex property 'class' holds {int(labels[bad][0])}, outside 0..{NUM_CLASSES - 1}")
        cloud = PointCloud(cloud.xyz, cloud.rgb, cloud.normals, cloud.fields, cloud.origin, source=path)
        meta = {"split_folder": "test" if test else "train", "labelled": cls is not None}
        return GTScene(name, cloud, labels, self.labelset, instances=None, frames=None, mesh=None,
                       source=path, meta=meta)
