"""ScanNet's binary ``.sens`` stream (the SensReader format, version 4) as a lazy FrameSequence.

Layout, little endian: uint32 version; uint64 length + sensor name; four float32 4x4 matrices
(colour intrinsics, colour extrinsics, depth intrinsics, depth extrinsics); int32 colour and
depth compression; uint32 colour width, height, depth width, height; float32 depth shift;
uint64 frame count; then per frame a float32 4x4 camera-to-world, uint64 colour and depth
timestamps, uint64 colour and depth byte counts, and the two payloads (IMU records may follow).

A ScanNet .sens is 1-3 GB, so reading only indexes it: the 96-byte frame headers are read and the
payloads seeked past, which also finds a truncated file before any pixel is decoded. A frame is
decoded when ``FrameSequence`` asks for it, from a file opened for that one load (safe in worker
processes). Extrinsics are identity in ScanNet and, as in SensReader, ignored.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from ..data import Camera, FrameSequence, RGBDFrame
from ..errors import InputError
from ._common import check_file, register
from .rgbd import _check_K, _valid_pose, check_aspect, depth_metres, load_color, resample_depth

VERSION = 4
COLOR_CODECS = {0: "raw", 1: "png", 2: "jpeg"}
DEPTH_CODECS = {0: "raw_ushort", 1: "zlib_ushort"}
_NAME_LEN = struct.Struct("<IQ")            # version, sensor-name length
_CALIB = struct.Struct("<64f2i4IfQ")        # 4 matrices, codecs, sizes, depth shift, frame count
_FRAME = struct.Struct("<16f4Q")            # pose, timestamps, payload sizes: 96 bytes
MAX_NAME = 4096
MAX_SIDE = 16384
MAX_DEPTH_SHIFT = 1e6


@dataclass
class SensHeader:
    sensor: str
    K_color: np.ndarray           # 3x3
    K_depth: np.ndarray           # 3x3
    color_codec: str
    depth_codec: str
    color_wh: tuple[int, int]
    depth_wh: tuple[int, int]
    depth_shift: float
    n_frames: int
    data_start: int               # byte offset of the first frame header

    def max_payload(self, what: str) -> int:
        """Largest plausible payload: raw is exact; compressed streams may not grow much."""
        w, h = self.color_wh if what == "color" else self.depth_wh
        raw = w * h * (3 if what == "color" else 2)
        codec = self.color_codec if what == "color" else self.depth_codec
        return raw if codec.startswith("raw") else 2 * raw + 65536


def read_header(path: str, f, size: int) -> SensHeader:
    """The stream header, every field checked against what a SensReader file can hold."""
    head = f.read(_NAME_LEN.size)
    if len(head) < _NAME_LEN.size:
        raise InputError(path, f"truncated .sens: {size} bytes, too short for a header")
    version, name_len = _NAME_LEN.unpack(head)
    if version != VERSION:
        raise InputError(path, f"unsupported .sens version {version} (SensReader files are version {VERSION})")
    if name_len > MAX_NAME:
        raise InputError(path, f"absurd .sens sensor-name length {name_len} (corrupt header)")
    name = f.read(name_len)
    calib = f.read(_CALIB.size)
    if len(name) < name_len or len(calib) < _CALIB.size:
        raise InputError(path, "truncated .sens: the file ends inside its header")
    vals = _CALIB.unpack(calib)
    mats = np.asarray(vals[:64], np.float64).reshape(4, 4, 4)
    ccodec, dcodec, cw, ch, dw, dh, shift, n = vals[64:]
    if ccodec not in COLOR_CODECS:
        raise InputError(path, f".sens colour compression {ccodec} is not supported (0 raw, 1 png, 2 jpeg)")
    if dcodec not in DEPTH_CODECS:
        raise InputError(path, f".sens depth compression {dcodec} is not supported (0 raw_ushort, 1 zlib_ushort)")
    for what, (w, h) in (("colour", (cw, ch)), ("depth", (dw, dh))):
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise InputError(path, f"absurd .sens {what} size {w}x{h} (corrupt header)")
    if not (np.isfinite(shift) and 0 < shift <= MAX_DEPTH_SHIFT):
        raise InputError(path, f"absurd .sens depth shift {shift:g} (expected about 1000 units per metre)")
    start = f.tell()
    if n > (size - start) // _FRAME.size:
        raise InputError(path, f"truncated .sens: header says {n} frames but {size - start} bytes cannot hold them")
    check_aspect(path, (cw, ch), (dw, dh))
    return SensHeader(name.decode("utf-8", "replace"), _check_K(path, mats[0, :3, :3]), _check_K(path, mats[2, :3, :3]),
                      COLOR_CODECS[ccodec], DEPTH_CODECS[dcodec], (cw, ch), (dw, dh), float(shift), int(n), start)


def index_frames(path: str, f, size: int, head: SensHeader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses (n, 4, 4) float64, payload offsets and colour/depth byte counts of every frame, from
    the frame headers alone; a payload that runs past the end of the file is an error here."""
    n = head.n_frames
    poses = np.empty((n, 4, 4), np.float64)
    offsets = np.empty(n, np.int64)
    sizes = np.empty((n, 2), np.int64)
    cmax, dmax = head.max_payload("color"), head.max_payload("depth")
    pos = head.data_start
    f.seek(pos)
    for i in range(n):
        rec = f.read(_FRAME.size)
        if len(rec) < _FRAME.size:
            raise InputError(path, f"truncated .sens: frame {i} of {n} has no complete header")
        vals = _FRAME.unpack(rec)
        c, d = vals[18], vals[19]
        if c > cmax or d > dmax:
            raise InputError(path, f"absurd .sens payload size in frame {i} ({c} colour / {d} depth bytes, "
                                   f"at most {cmax} / {dmax} for {head.color_codec} / {head.depth_codec})")
        pos += _FRAME.size
        if pos + c + d > size:
            raise InputError(path, f"truncated .sens: frame {i} of {n} needs {c + d} payload bytes, "
                                   f"{size - pos} left in the file")
        poses[i] = np.asarray(vals[:16], np.float64).reshape(4, 4)
        offsets[i] = pos
        sizes[i] = c, d
        pos += c + d
        f.seek(pos)
    return poses, offsets, sizes


@dataclass
class SensFrames:
    """The loader of a read .sens: where each kept frame's payloads are, never the payloads."""

    path: str
    header: SensHeader
    cameras: list[Camera]
    names: list[str]
    offsets: np.ndarray          # (n,) int64 byte offset of each frame's colour payload
    sizes: np.ndarray            # (n, 2) int64 colour and depth byte counts

    def load(self, i: int) -> RGBDFrame:
        h, cam, name = self.header, self.cameras[i], self.names[i]
        c, d = (int(v) for v in self.sizes[i])
        try:
            with open(self.path, "rb") as f:
                f.seek(int(self.offsets[i]))
                cdata, ddata = f.read(c), f.read(d)
        except OSError as exc:
            raise InputError(self.path, f"cannot read frame {name}: {exc.strerror or exc}") from None
        if len(cdata) < c or len(ddata) < d:
            raise InputError(self.path, f"truncated .sens: frame {name} ends early (file changed since it was read?)")
        return RGBDFrame(cam, self._color(name, cdata) if c else None, self._depth(name, ddata, cam) if d else None, name)

    def _color(self, name: str, data: bytes) -> np.ndarray:
        w, h = self.header.color_wh
        if self.header.color_codec == "raw":
            if len(data) != w * h * 3:
                raise InputError(self.path, f"frame {name}: raw colour has {len(data)} bytes, {w}x{h} RGB needs {w * h * 3}")
            return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()
        try:
            img = load_color(self.path, data)
        except InputError as exc:
            raise InputError(self.path, f"frame {name}: {exc.problem}") from None
        if img.shape[:2] != (h, w):
            raise InputError(self.path, f"frame {name}: colour image is {img.shape[1]}x{img.shape[0]}, header says {w}x{h}")
        return img

    def _depth(self, name: str, data: bytes, cam: Camera) -> np.ndarray:
        w, h = self.header.depth_wh
        if self.header.depth_codec == "zlib_ushort":
            try:
                data = zlib.decompressobj().decompress(data, w * h * 2 + 1)
            except zlib.error as exc:
                raise InputError(self.path, f"frame {name}: depth is not a zlib stream ({exc})") from None
        if len(data) != w * h * 2:
            raise InputError(self.path, f"frame {name}: depth holds {len(data)} bytes, {w}x{h} uint16 needs {w * h * 2}")
        raw = np.frombuffer(data, "<u2").reshape(h, w)
        try:
            depth = depth_metres(self.path, raw, self.header.depth_shift)
        except InputError as exc:
            raise InputError(self.path, f"frame {name}: {exc.problem}") from None
        return resample_depth(depth, self.header.K_depth, cam.scaled(w, h).K)


def read_sens(path: str, layout=None, *, frame_skip: int = 1) -> FrameSequence:
    """Every ``frame_skip``-th frame of a ScanNet .sens (as SensReader exports them: frames 0,
    k, 2k, ... named by their index), minus frames with a non-finite pose (lost tracking)."""
    path = os.fspath(path)
    check_file(path)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = read_header(path, f, size)
            poses, offsets, sizes = index_frames(path, f, size, head)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    keep = np.arange(0, head.n_frames, max(1, int(frame_skip)))
    ok = []
    for i in keep:
        try:
            ok.append(_valid_pose(path, poses[i]))
        except InputError as exc:
            raise InputError(path, f"frame {i}: {exc.problem}") from None
    skipped = int(len(ok) - sum(ok))
    keep = keep[np.asarray(ok, bool)] if len(keep) else keep
    if not len(keep):
        raise InputError(path, f"no frame has a valid pose (all {skipped} are NaN/Inf)" if skipped else "holds no frames")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} frames with invalid (non-finite) poses")
    w, h = head.color_wh
    cameras = [Camera(head.K_color, poses[i], w, h) for i in keep]
    frames = SensFrames(path, head, cameras, [str(int(i)) for i in keep], offsets[keep], sizes[keep])
    seq = FrameSequence(cameras, frames.names, frames.load, source=path, depth_scale=head.depth_shift,
                        has_depth=bool(sizes[keep, 1].any()), has_color=bool(sizes[keep, 0].any()))
    frames.load(0)  # fail now, not mid-pipeline, on an undecodable frame or a wrong depth shift
    return seq


register("sens", "frames", exts=(".sens",))(read_sens)
