"""ROS 1 ``.bag`` and ROS 2 bags (a folder with metadata.yaml, sqlite3 or MCAP) as posed RGB-D
frames, read with the ``rosbags`` package (``pip install pc_ovseg[ros]``).

Topics are chosen by type (``topics`` narrows the choice): sensor_msgs/Image or CompressedImage
(colour: rgb8, bgr8, rgba8, bgra8, mono8, JPEG/PNG; depth: 16UC1 / mono16 millimetres, 32FC1
metres, compressedDepth PNG), sensor_msgs/CameraInfo (the intrinsics; the one matching the
colour image's size), and the camera pose: geometry_msgs/PoseStamped or nav_msgs/Odometry
(the pose of the camera's optical frame, OpenCV axes), else /tf + /tf_static from the depth
image's frame (or ``camera_frame``) up to ``world_frame`` (default: the root of the tf tree).
Depth images are the frames; colour and pose are matched to each by header stamp within
``sync`` seconds (poses and transforms interpolated between the two nearest). Frames with no
match or an invalid pose are skipped and counted; a bag where no frame matches is an error
naming the topic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import Camera, FrameSequence, RGBDFrame
from ..errors import InputError
from ._common import register

IMAGE = ("sensor_msgs/msg/Image",)
COMPRESSED = ("sensor_msgs/msg/CompressedImage",)
INFO = ("sensor_msgs/msg/CameraInfo",)
POSES = ("geometry_msgs/msg/PoseStamped", "nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseWithCovarianceStamped")
TF = ("tf2_msgs/msg/TFMessage",)
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = {"16UC1": 1000.0, "mono16": 1000.0, "32FC1": 1.0}


def is_rosbag(path) -> bool:
    p = Path(os.fspath(path))
    if p.is_dir():
        return (p / "metadata.yaml").is_file()
    return p.suffix.lower() in (".bag", ".mcap", ".db3")


def _bag_path(path) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise InputError(str(p), "no such file or directory")
    if p.suffix.lower() in (".mcap", ".db3"):  # a ROS 2 bag's storage file: the bag is its folder
        if not (p.parent / "metadata.yaml").is_file():
            raise InputError(str(p), "a ROS 2 bag is the folder holding metadata.yaml and this file; "
                                     "metadata.yaml is missing")
        p = p.parent
    return p


def _reader(path: Path):
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise InputError(str(path), "reading ROS bags needs the rosbags package: pip install 'pc_ovseg[ros]'") from None
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


def _stamp(msg) -> float:
    st = msg.header.stamp
    return float(st.sec) + 1e-9 * float(st.nanosec)


def _quat_matrix(q) -> np.ndarray:
    x, y, z, w = (float(q.x), float(q.y), float(q.z), float(q.w))
    n = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(n) or n < 1e-9:
        return np.full((3, 3), np.nan)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _matrix(position, orientation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _quat_matrix(orientation)
    m[:3, 3] = [float(position.x), float(position.y), float(position.z)]
    return m


def _slerp_pose(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Between two rigid poses: translation linear, rotation along the geodesic."""
    from scipy.spatial.transform import Rotation, Slerp
    if t <= 0:
        return a
    if t >= 1:
        return b
    rots = Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]]))
    m = np.eye(4)
    m[:3, :3] = Slerp([0.0, 1.0], rots)([t]).as_matrix()[0]
    m[:3, 3] = (1 - t) * a[:3, 3] + t * b[:3, 3]
    return m


class _Track:
    """Time-stamped poses of one thing (a pose topic, or one dynamic tf edge)."""

    def __init__(self):
        self.t: list[float] = []
        self.m: list[np.ndarray] = []

    def add(self, t: float, m: np.ndarray) -> None:
        self.t.append(t)
        self.m.append(m)

    def finish(self) -> None:
        order = np.argsort(self.t, kind="stable")
        self.t = np.asarray(self.t, np.float64)[order]
        self.m = [self.m[i] for i in order]

    def at(self, t: float, tol: float) -> np.ndarray | None:
        """Interpolated between the two stamps around ``t`` (each within ``tol`` of it, or the
        nearest alone); None when no stamp is that close."""
        ts = self.t
        if len(ts) == 0:
            return None
        j = int(np.searchsorted(ts, t))
        lo, hi = j - 1, j
        if 0 <= lo and hi < len(ts) and t - ts[lo] <= tol and ts[hi] - t <= tol:
            span = ts[hi] - ts[lo]
            return _slerp_pose(self.m[lo], self.m[hi], 0.0 if span <= 0 else (t - ts[lo]) / span)
        cands = [k for k in (lo, hi) if 0 <= k < len(ts) and abs(ts[k] - t) <= tol]
        if not cands:
            return None
        return self.m[min(cands, key=lambda k: abs(ts[k] - t))]


@dataclass
class _Stream:
    topic: str
    msgtype: str
    count: int
    role: str = ""          # color, depth, info, pose, tf
    encoding: str = ""
    keys: list = field(default_factory=list)      # per message: (bag time ns, rank among equal times)
    stamps: list = field(default_factory=list)    # per message: header stamp (s)


class BagFrames:
    """A bag's synchronised depth (+ colour) frames with camera poses: ``len``, ``camera(i)``,
    ``iter_frames(indices)`` (one pass over the bag), ``load(i)`` (random access),
    ``sequence()`` (a FrameSequence for the other commands) and ``summary()``."""

    def __init__(self, path, *, topics: str | list[str] | None = None, sync: float = 0.02,
                 world_frame: str | None = None, camera_frame: str | None = None):
        self.path = _bag_path(path)
        self.source = str(self.path)
        self.sync = float(sync)
        self.world_frame, self.camera_frame = world_frame, camera_frame
        self.skipped = {"no_color": 0, "no_pose": 0, "invalid_pose": 0}
        self._index(topics)
        self._plan()

    # -- pass 1: what the bag holds ---------------------------------------------------------------
    def _index(self, topics) -> None:
        with _reader(self.path) as reader:
            conns = list(reader.connections)
            self.all_topics = sorted({(c.topic, c.msgtype, c.msgcount) for c in conns})
            wanted = None
            if topics:
                wanted = [t.strip() for t in (topics.split(",") if isinstance(topics, str) else topics) if t.strip()]
                have = {c.topic for c in conns}
                for t in wanted:
                    if t not in have:
                        raise InputError(self.source, f"topic {t} is not in the bag (topics: "
                                                      f"{', '.join(sorted(have)) or 'none'})")
            use = [c for c in conns if c.msgtype in IMAGE + COMPRESSED + INFO + POSES + TF
                   and (wanted is None or c.topic in wanted or (c.msgtype in TF and c.topic == "/tf_static"
                                                                and "/tf" in wanted))]
            self.streams: dict[int, _Stream] = {}
            self._conn = {}
            self.info: dict[str, tuple[np.ndarray, int, int]] = {}
            self.poses: dict[str, _Track] = {}
            self.tf_static: dict[tuple[str, str], np.ndarray] = {}
            self.tf_dynamic: dict[tuple[str, str], _Track] = {}
            self.frame_ids: dict[str, str] = {}
            last: dict[int, tuple[int, int]] = {}
            for conn, t, raw in reader.messages(connections=use):
                s = self.streams.setdefault(conn.id, _Stream(conn.topic, conn.msgtype, conn.msgcount))
                self._conn[conn.id] = conn
                prev = last.get(conn.id)
                rank = prev[1] + 1 if prev and prev[0] == t else 0
                last[conn.id] = (t, rank)
                if conn.msgtype in TF:
                    s.role = "tf"
                    static = conn.topic == "/tf_static"
                    for tr in reader.deserialize(raw, conn.msgtype).transforms:
                        edge = (tr.header.frame_id.lstrip("/"), tr.child_frame_id.lstrip("/"))
                        m = _matrix(tr.transform.translation, tr.transform.rotation)
                        if static:
                            self.tf_static[edge] = m
                        else:
                            self.tf_dynamic.setdefault(edge, _Track()).add(_stamp(tr), m)
                    continue
                if conn.msgtype in IMAGE and s.role:  # the role is known: only the header is needed
                    msg = reader.deserialize(raw, conn.msgtype)
                    s.keys.append((t, rank))
                    s.stamps.append(_stamp(msg))
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.msgtype in INFO:
                    s.role = "info"
                    if conn.topic not in self.info:
                        K = np.asarray(getattr(msg, "k", None) if hasattr(msg, "k") else msg.K, np.float64).reshape(3, 3)
                        self.info[conn.topic] = (K, int(msg.width), int(msg.height))
                        self.frame_ids[conn.topic] = msg.header.frame_id.lstrip("/")
                elif conn.msgtype in POSES:
                    s.role = "pose"
                    p = msg.pose.pose if conn.msgtype != "geometry_msgs/msg/PoseStamped" else msg.pose
                    self.poses.setdefault(conn.topic, _Track()).add(_stamp(msg), _matrix(p.position, p.orientation))
                else:
                    if not s.role:
                        s.role, s.encoding = _image_role(conn.topic, conn.msgtype, msg)
                        self.frame_ids[conn.topic] = msg.header.frame_id.lstrip("/")
                    s.keys.append((t, rank))
                    s.stamps.append(_stamp(msg))
        for tr in list(self.poses.values()) + list(self.tf_dynamic.values()):
            tr.finish()

    # -- synchronisation ----------------------------------------------------------------------------
    def _pick(self, role: str) -> _Stream | None:
        cands = [s for s in self.streams.values() if s.role == role and s.keys]
        if len(cands) > 1:
            names = ", ".join(s.topic for s in cands)
            raise InputError(self.source, f"several {role} topics ({names}): choose one with --topics")
        return cands[0] if cands else None

    def _plan(self) -> None:
        images = [f"{t} ({m.split('/')[-1]})" for t, m, _ in self.all_topics if m in IMAGE + COMPRESSED]
        self.depth = self._pick("depth")
        if self.depth is None:
            raise InputError(self.source, "no depth topic (a 16UC1 / 32FC1 sensor_msgs/Image or compressedDepth "
                                          f"image); image topics: {', '.join(images) or 'none'}")
        self.color = self._pick("color")
        if not self.info:
            raise InputError(self.source, "no sensor_msgs/CameraInfo topic: the intrinsics are needed")
        pose_topics = sorted(self.poses)
        if len(pose_topics) > 1:
            raise InputError(self.source, f"several pose topics ({', '.join(pose_topics)}): choose one with --topics")
        self.pose_source = pose_topics[0] if pose_topics else ("/tf" if self.tf_dynamic or self.tf_static else None)
        if self.pose_source is None:
            raise InputError(self.source, "no camera pose: no geometry_msgs/PoseStamped, nav_msgs/Odometry or /tf topic")
        # intrinsics: the CameraInfo matching the colour image (else the depth image) in size
        self._size = {}
        self.K, self.width, self.height = self._intrinsics()
        if self.pose_source == "/tf":
            self._tf_chain()
        d_stamps = np.asarray(self.depth.stamps)
        c_stamps = np.asarray(self.color.stamps) if self.color else None
        c_order = np.argsort(c_stamps, kind="stable") if self.color else None
        self.frames: list[tuple[int, int | None, np.ndarray, float]] = []  # depth k, colour k, pose, stamp
        no_color = no_pose = 0
        for k, t in enumerate(d_stamps):
            ck = None
            if self.color is not None:
                j = int(np.searchsorted(c_stamps[c_order], t))
                near = [c_order[q] for q in (j - 1, j) if 0 <= q < len(c_order)]
                best = min(near, key=lambda q: abs(c_stamps[q] - t))
                if abs(c_stamps[best] - t) > self.sync:
                    no_color += 1
                    continue
                ck = int(best)
            pose = self._pose_at(float(t))
            if pose is None:
                no_pose += 1
                continue
            if not _rigid(pose):
                self.skipped["invalid_pose"] += 1
                continue
            self.frames.append((k, ck, pose, float(t)))
        self.skipped["no_color"], self.skipped["no_pose"] = no_color, no_pose
        if not self.frames:
            if no_color:
                raise InputError(self.color.topic, f"no message within {self.sync:g} s of any depth image on "
                                                   f"{self.depth.topic} (unsynchronised streams?)")
            if no_pose:
                raise InputError(self.pose_source, f"no pose within {self.sync:g} s of any depth image on "
                                                   f"{self.depth.topic} (unsynchronised streams?)")
            raise InputError(self.pose_source, f"no depth image on {self.depth.topic} has a valid pose")

    def _intrinsics(self):
        sizes = {}
        for s in (self.color, self.depth):
            if s is not None:
                sizes[s.topic] = self._image_size(s)
        want = sizes[self.color.topic] if self.color else sizes[self.depth.topic]
        for topic, (K, w, h) in sorted(self.info.items()):
            if (w, h) == want:
                break
        else:
            topic = sorted(self.info)[0]
            K, w, h = self.info[topic]
            if abs(w / h - want[0] / want[1]) > 0.015:
                raise InputError(topic, f"camera info is {w}x{h}, the images are {want[0]}x{want[1]}")
            K = K.copy()
            K[0] *= want[0] / w
            K[1] *= want[1] / h
            w, h = want
        if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
            raise InputError(topic, f"invalid intrinsics (fx={K[0, 0]:g}, fy={K[1, 1]:g})")
        self.info_topic = topic
        return K, int(w), int(h)

    def _image_size(self, s: _Stream) -> tuple[int, int]:
        img = self._decode(s, 0)
        return img.shape[1], img.shape[0]

    def _tf_chain(self) -> None:
        """The edges from the camera frame up to the world frame (parents of each child)."""
        parent = {c: p for (p, c) in list(self.tf_static) + list(self.tf_dynamic)}
        cam = (self.camera_frame or self.frame_ids.get(self.depth.topic) or "").lstrip("/")
        if not cam:
            raise InputError("/tf", f"the depth images on {self.depth.topic} have no frame_id: give --camera-frame")
        chain, f = [], cam
        seen = {f}
        while f in parent and f != self.world_frame:
            chain.append((parent[f], f))
            f = parent[f]
            if f in seen:
                raise InputError("/tf", f"the transforms above {cam!r} form a loop")
            seen.add(f)
        world = self.world_frame or f
        if f != world:
            known = sorted({x for e in parent.items() for x in e})
            raise InputError("/tf", f"no transform from {cam!r} to {world!r} (frames: {', '.join(known) or 'none'})")
        if not chain:
            known = ', '.join(sorted({x for e in parent.items() for x in e})) or 'none'
            to = f"to {world!r}" if self.world_frame else "to any other frame"
            raise InputError("/tf", f"no transform from {cam!r} {to} (frames: {known})")
        self.camera_frame, self.world_frame, self._chain = cam, world, chain

    def _pose_at(self, t: float) -> np.ndarray | None:
        if self.pose_source != "/tf":
            return self.poses[self.pose_source].at(t, self.sync)
        m = np.eye(4)
        for edge in self._chain:  # camera -> ... -> world: world_T_cam = T(w, a) ... T(b, cam)
            e = self.tf_static.get(edge)
            if e is None:
                e = self.tf_dynamic[edge].at(t, self.sync)
                if e is None:
                    return None
            m = e @ m
        return m

    # -- frames -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    def camera(self, i: int) -> Camera:
        return Camera(self.K, self.frames[i][2], self.width, self.height)

    def name(self, i: int) -> str:
        return f"frame-{self.frames[i][0]:06d}"

    def _decode(self, s: _Stream, k: int, raw_msg=None):
        if raw_msg is None:
            raw_msg = self._fetch(s, k)
        return _decode_image(s, raw_msg)

    def _fetch(self, s: _Stream, k: int):
        t, rank = s.keys[k]
        conn = next(c for cid, c in self._conn.items() if self.streams[cid] is s)
        with _reader(self.path) as reader:
            c = next(x for x in reader.connections if x.topic == conn.topic and x.msgtype == conn.msgtype)
            for j, (_, _, raw) in enumerate(reader.messages(connections=[c], start=t, stop=t + 1)):
                if j == rank:
                    return reader.deserialize(raw, c.msgtype)
        raise InputError(s.topic, f"message {k} could not be read again")

    def _frame(self, i: int, depth_msg, color_msg) -> RGBDFrame:
        from .rgbd import depth_metres
        raw = _decode_image(self.depth, depth_msg)
        depth = depth_metres(self.depth.topic, raw, DEPTH_ENCODINGS.get(self.depth.encoding, 1000.0))
        color = _decode_image(self.color, color_msg) if color_msg is not None else None
        cam = self.camera(i)
        if color is not None and (color.shape[1], color.shape[0]) != (cam.width, cam.height):
            raise InputError(self.color.topic, f"colour image is {color.shape[1]}x{color.shape[0]}, "
                                               f"camera info says {cam.width}x{cam.height}")
        from .rgbd import check_aspect
        check_aspect(self.depth.topic, (cam.width, cam.height), (depth.shape[1], depth.shape[0]))
        return RGBDFrame(cam, color, depth, self.name(i))

    def load(self, i: int) -> RGBDFrame:
        dk, ck, _, _ = self.frames[i]
        return self._frame(i, self._fetch(self.depth, dk), self._fetch(self.color, ck) if ck is not None else None)

    def iter_frames(self, indices=None):
        """The frames ``indices`` (default all) in order, reading the bag once."""
        idx = list(range(len(self)) if indices is None else indices)
        need: dict[tuple[int, int], int] = {}   # (stream id, message k) -> frames still needing it
        for i in idx:
            dk, ck, _, _ = self.frames[i]
            need[(0, dk)] = need.get((0, dk), 0) + 1
            if ck is not None:
                need[(1, ck)] = need.get((1, ck), 0) + 1
        have: dict[tuple[int, int], object] = {}
        pos = 0
        streams = {0: self.depth, 1: self.color}
        topics = {s.topic: n for n, s in streams.items() if s is not None}
        with _reader(self.path) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            counters = {c.id: -1 for c in conns}
            for conn, _, raw in reader.messages(connections=conns):
                counters[conn.id] += 1
                key = (topics[conn.topic], counters[conn.id])
                if key not in need:
                    continue
                have[key] = reader.deserialize(raw, conn.msgtype)
                while pos < len(idx):
                    i = idx[pos]
                    dk, ck, _, _ = self.frames[i]
                    if (0, dk) not in have or (ck is not None and (1, ck) not in have):
                        break
                    yield self._frame(i, have[(0, dk)], have[(1, ck)] if ck is not None else None)
                    for kk in ((0, dk),) + (((1, ck),) if ck is not None else ()):
                        need[kk] -= 1
                        if need[kk] == 0:
                            have.pop(kk, None)
                    pos += 1

    def sequence(self) -> FrameSequence:
        return FrameSequence([self.camera(i) for i in range(len(self))], [self.name(i) for i in range(len(self))],
                             self.load, source=self.source, depth_scale=DEPTH_ENCODINGS.get(self.depth.encoding, 1000.0),
                             has_depth=True, has_color=self.color is not None)

    def summary(self) -> dict:
        """What ``pc-ovseg info`` lists: every topic, the ones used and their roles, the frames."""
        used = {s.topic: s for s in self.streams.values()}
        topics = []
        for t, m, n in self.all_topics:
            s = used.get(t)
            role = s.role if s else ""
            topics.append({"topic": t, "type": m, "messages": int(n), "role": role,
                           **({"encoding": s.encoding} if s and s.encoding else {})})
        chosen = {"depth": self.depth.topic, "color": self.color.topic if self.color else None,
                  "camera_info": self.info_topic, "pose": self.pose_source}
        if self.pose_source == "/tf":
            chosen.update(camera_frame=self.camera_frame, world_frame=self.world_frame)
        return {"topics": topics, "used": chosen, "synced_frames": len(self), "sync_s": self.sync,
                "skipped": dict(self.skipped), "skipped_invalid_pose": self.skipped["invalid_pose"]}


def _rigid(pose: np.ndarray) -> bool:
    from .rgbd import check_pose
    try:
        check_pose("pose", pose)
    except InputError:
        return False
    return True


def _image_role(topic: str, msgtype: str, msg) -> tuple[str, str]:
    """(role, encoding) of an image topic from its first message."""
    if msgtype in COMPRESSED:
        fmt = str(msg.format)
        if "compresseddepth" in fmt.lower():
            if not fmt.split(";")[0].strip() in ("16UC1", "mono16"):
                raise InputError(topic, f"unsupported compressedDepth format {fmt!r} (16UC1 PNG is read)")
            return "depth", "compressedDepth"
        return "color", fmt.split(";")[0].strip() or "compressed"
    enc = str(msg.encoding)
    if enc in DEPTH_ENCODINGS:
        return "depth", enc
    if enc in COLOR_ENCODINGS:
        return "color", enc
    raise InputError(topic, f"unknown image encoding {enc!r} (colour: {', '.join(COLOR_ENCODINGS)}; "
                            f"depth: {', '.join(DEPTH_ENCODINGS)})")


def _decode_image(s: _Stream, msg) -> np.ndarray:
    """uint8 (H, W, 3) RGB for colour, the raw depth array for depth."""
    if s.msgtype in COMPRESSED:
        data = bytes(msg.data)
        if s.encoding == "compressedDepth":
            from PIL import Image
            import io as _io
            try:
                with Image.open(_io.BytesIO(data[12:])) as im:
                    return np.asarray(im)
            except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input
                raise InputError(s.topic, f"not a readable compressedDepth image ({type(exc).__name__})") from None
        from .rgbd import load_color
        return load_color(s.topic, data)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    enc = str(msg.encoding)
    if enc != s.encoding:
        raise InputError(s.topic, f"image encoding changed from {s.encoding!r} to {enc!r}")
    big = bool(msg.is_bigendian)
    dt, ch = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
              "mono8": (np.uint8, 1), "16UC1": (np.dtype(">u2" if big else "<u2"), 1),
              "mono16": (np.dtype(">u2" if big else "<u2"), 1), "32FC1": (np.dtype(">f4" if big else "<f4"), 1)}[enc]
    dt = np.dtype(dt)
    data = np.asarray(msg.data, np.uint8)
    if h <= 0 or w <= 0 or step < w * ch * dt.itemsize or data.size < h * step:
        raise InputError(s.topic, f"image data of {data.size} bytes does not hold {w}x{h} {enc} (step {step})")
    rows = data[: h * step].reshape(h, step)[:, : w * ch * dt.itemsize]
    img = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch) if ch > 1 else \
        np.ascontiguousarray(rows).view(dt).reshape(h, w)
    if enc in ("16UC1", "mono16", "32FC1"):
        return img.astype(dt.newbyteorder("=")) if big else img
    if enc == "mono8":
        return np.repeat(img[..., None], 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])


def open_bag(path, **kw) -> BagFrames:
    """The synchronised frames of a ROS bag (see BagFrames); bad bags raise one InputError."""
    try:
        return BagFrames(path, **kw)
    except InputError:
        raise
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags' own errors (torn files, unknown types) are bad input
        raise InputError(os.fspath(path), f"cannot read as a ROS bag ({type(exc).__name__}: "
                                          f"{' '.join(str(exc).split())[:200]})") from None


def read_rosbag(path, layout=None) -> FrameSequence:
    return open_bag(path).sequence()


def describe_bag(path) -> dict:
    """``pc-ovseg info`` of a bag: its topics (and the roles chosen), the synchronised frames;
    a bag that cannot be mapped still lists its topics, with the problem."""
    from .describe import _describe_frames
    try:
        bag = open_bag(path)
    except InputError as err:
        p = _bag_path(path)
        try:
            with _reader(p) as reader:
                topics = [{"topic": c.topic, "type": c.msgtype, "messages": int(c.msgcount)}
                          for c in sorted(reader.connections, key=lambda c: c.topic)]
        except Exception:  # noqa: BLE001 - the bag itself is unreadable: that is the error
            raise err from None
        return {"path": str(p), "type": "rosbag", "topics": topics, "problem": err.problem}
    d = _describe_frames(bag.sequence())
    d.update(type="rosbag", **{k: v for k, v in bag.summary().items() if k != "skipped_invalid_pose"})
    return d


def format_topics(d: dict) -> list[str]:
    """The text lines of a bag's topics for ``pc-ovseg info``."""
    lines = ["  topics"]
    for t in d.get("topics", []):
        role = t.get("role") or ""
        enc = f" {t['encoding']}" if t.get("encoding") else ""
        lines.append(f"    {t['topic']:<28} {t['type']:<32} {t['messages']:>7}  {role}{enc}")
    if d.get("used"):
        u = d["used"]
        lines.append("  used        " + ", ".join(f"{k}={v}" for k, v in u.items() if v))
        sk = {k: v for k, v in d.get("skipped", {}).items() if v}
        lines.append(f"  synced      {d['synced_frames']} frames within {d['sync_s']:g} s"
                     + (f" (skipped: {', '.join(f'{k} {v}' for k, v in sk.items())})" if sk else ""))
    if d.get("problem"):
        lines.append(f"  problem     {d['problem']}")
    return lines


def _is_rosbag2(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metadata.yaml"))


register("rosbag", "frames", exts=(".bag", ".mcap", ".db3"), folder_probe=_is_rosbag2)(read_rosbag)
