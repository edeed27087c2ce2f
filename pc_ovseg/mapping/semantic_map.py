"""SemanticMap: posed RGB-D frames streamed into a sparse voxel map that answers queries at any time.

Per voxel (a native hash, src/native/mapping.cpp, hands out dense slots; the arrays are here):
position and colour (running means of every depth point that fell in it), points and frames
that hit it, and the fused 2D feature (fp16 running weighted mean, as batch fusion keeps it)
with its weight and feature-observation count.

* Geometry updates every frame: depth back-projected with the views stage's own rule
  (``views.frames.backproject``: finite depth > 0, the same image border the views skip); a
  voxel's position and colour are the mean over frames of each frame's mean, as the batch cloud
  from frames (``views.frames.cloud_from_frames``) averages them.
* Features fuse on keyframes: the frame's View of the map (``views.frames.frame_view``: the
  same depth test and index map as batch frame views) weighted by ``fusion.view_visibility``
  (distance, depth agreement, border, not drawn; the viewing angle too with
  ``MappingConfig.normals``, from the keyframe's depth normals: a batch RGB-D cloud has no
  normals, so by default the map weighs as batch runs do), accumulated with the batch accumulator (``native.fuse_accumulate``). With one
  granularity (frames) batch fusion's sample balancing divides a point's every observation by
  the same total, so the streamed mean is the batch one; the mask check needs every view twice
  and is left to batch ``run``; segment pooling and smoothing run when a map is saved
  (``FeatureFusion.result``).
* The 2D model runs in a worker thread on keyframes (every Nth frame, or when the camera moved
  or turned enough), so geometry keeps up with the stream; ``keyframes`` records which frames
  were encoded.
* Queries (``labels``/``heatmap``/``objects``) run on a snapshot taken under the lock
  (a FeatureCloud, through ``query.QueryEngine``), from any thread.
* Memory is bounded by ``max_voxels``: past it the least observed voxels (fewest frames, then
  longest unseen) are dropped down to 90 % of the budget. Per-voxel arrays grow by doubling up
  to the budget, so memory follows voxels, never frames.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np

from .. import native
from ..config import MappingConfig
from ..data import Camera, FeatureCloud, PointCloud, RGBDFrame, View, ViewFeatures
from ..errors import InputError
from ..fusion import FeatureFusion, FusionConfig, view_visibility

_DROPPED = object()     # a live keyframe the encoder did not get to
_FUSED = object()       # a live keyframe the encoder thread fused itself
TIMINGS_KEPT = 10_000   # update / fusion times kept (the latest): bookkeeping never grows with frames
PRUNE_TO = 0.9          # a pruned map keeps this fraction of max_voxels
MAP_FORMAT = "pc_ovseg.SemanticMap/1"


class SemanticMap:
    """A growing voxel map of posed RGB-D frames with fused 2D features (see the module doc).

    ``encoder``: a view encoder (``EncoderConfig.build()``, an oracle, anything with
    ``encode(View) -> ViewFeatures``) run on keyframes in a worker thread; without one, frames
    fuse only the ``features`` they are given. ``live=True``: when ``pending`` keyframes already
    wait for the encoder, the oldest waiting one is dropped, and keyframes fuse in the encoder
    thread (a camera does not wait); otherwise ``add_frame`` waits and keyframes fuse in its
    thread ``fuse_lag`` frames later (a recording loses nothing and maps the same every time). ``snapshot_path``: the map is written there
    (atomically) every ``snapshot_every`` frames.
    """

    def __init__(self, voxel_size: float = 0.05, feature_dim: int | None = None, *, encoder=None,
                 config: MappingConfig | None = None, fusion: FusionConfig | None = None,
                 max_voxels: int | None = None, snapshot_path=None, live: bool = False,
                 encoder_spec: str | None = None, class_names: list[str] | None = None,
                 depth_scale: float = 1000.0):
        cfg = config or MappingConfig()
        self.cfg = replace(cfg, voxel_size=float(voxel_size),
                           max_voxels=int(max_voxels) if max_voxels is not None else cfg.max_voxels)
        self.voxel_size = self.cfg.voxel_size
        self.fusion_cfg = fusion or FusionConfig()
        self.encoder = encoder
        inner = getattr(encoder, "encoder", None)
        self.encoder_spec = encoder_spec if encoder_spec is not None else str(getattr(inner, "spec", "") or "")
        self.class_names = class_names if class_names is not None else getattr(inner, "class_names", None)
        self.depth_scale = float(depth_scale)
        self.live = bool(live)
        self.snapshot_path = snapshot_path
        self.origin = np.zeros(3)
        self._table = native.voxel_hash(self.voxel_size)
        self._lock = threading.RLock()
        if feature_dim is None:  # known up front for label spaces and built encoders
            feature_dim = len(self.class_names) if self.class_names else getattr(encoder, "dim", None)
        self._dim = None if feature_dim is None else int(feature_dim)
        self._cap = 0
        self._alloc(4096)
        # bookkeeping
        self.frames = 0                    # frames integrated
        self.skipped = {"invalid_pose": 0, "no_depth": 0}
        self.keyframes: list[str] = []     # frames whose 2D features are fused, in fusion order
        self.keyframes_dropped = 0         # live: keyframes the encoder could not keep up with
        self.voxels_dropped = 0
        self.points_out_of_range = 0
        self.timings = {"update": deque(maxlen=TIMINGS_KEPT), "fuse": deque(maxlen=TIMINGS_KEPT)}
        self._version = 0                  # bumps on every change (a query snapshot is reused until then)
        self._generation = 0               # bumps when slots are renumbered (pruning)
        self._remaps: list[tuple[int, np.ndarray]] = []
        self._last_key_pose = None
        self._since_key = 0
        self._engine = None
        self._queue: queue.Queue | None = None
        self._pending: deque = deque()      # [frame number, frame, features | None | _DROPPED]
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- storage -------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        """Per-voxel arrays with room for ``cap`` voxels (existing rows kept)."""
        n = self._table.size
        old = getattr(self, "_pos", None)

        def grow(a, shape, dtype, fill=0):
            b = np.full((cap, *shape), fill, dtype)
            if a is not None:
                k = min(n, len(a))
                b[:k] = a[:k]
            return b
        self._pos = grow(old, (3,), np.float32)
        self._col = grow(getattr(self, "_col", None), (3,), np.float32)
        self._npts = grow(getattr(self, "_npts", None), (), np.uint32)
        self._obs = grow(getattr(self, "_obs", None), (), np.uint16)
        self._last = grow(getattr(self, "_last", None), (), np.int32, -1)
        self._wsum = grow(getattr(self, "_wsum", None), (), np.float32)
        self._fcount = grow(getattr(self, "_fcount", None), (), np.uint16)
        self._feat = grow(getattr(self, "_feat", None), (self._dim,), np.float16) if self._dim else None
        self._cap = cap

    def _ensure(self, n: int) -> None:
        if n > self._cap:
            limit = self.cfg.max_voxels + self.cfg.max_voxels // 4
            self._alloc(max(n, min(2 * self._cap, limit)))

    def _set_dim(self, dim: int) -> None:
        if self._dim is None:
            self._dim = int(dim)
            self._feat = np.zeros((self._cap, self._dim), np.float16)
        elif dim != self._dim:
            raise ValueError(f"features are {dim}-d, the map's are {self._dim}-d")

    @property
    def size(self) -> int:
        """Voxels in the map."""
        return int(self._table.size)

    @property
    def feature_dim(self) -> int | None:
        return self._dim

    def bytes_per_voxel(self) -> float:
        """Bytes the map holds per voxel: the per-voxel arrays (at their allocated size) and the
        hash table, divided by the voxels in it."""
        arrays = [self._pos, self._col, self._npts, self._obs, self._last, self._wsum, self._fcount]
        total = sum(a.nbytes for a in arrays) + (self._feat.nbytes if self._feat is not None else 0)
        return (total + self._table.table_bytes) / max(self.size, 1)

    # -- frames ----------------------------------------------------------------------------------
    def add_frame(self, rgb, depth, K, cam_to_world, features: ViewFeatures | None = None, *,
                  name: str | None = None) -> bool:
        """One posed frame: ``rgb`` (H, W, 3) uint8 or None, ``depth`` metres (float) or raw
        integer units (``depth_scale`` per metre; 0 = invalid), ``K`` 3x3 intrinsics of the colour
        image, ``cam_to_world`` 4x4 (OpenCV axes). Returns False when the frame was skipped
        (invalid pose or no valid depth; counted in ``skipped``)."""
        from ..io.rgbd import depth_metres
        label = name or f"frame{self.frames + sum(self.skipped.values()):06d}"
        raw = np.asarray(depth)
        d = depth_metres(label, raw, 1.0 if raw.dtype.kind == "f" else self.depth_scale)
        H, W = (rgb.shape[:2] if rgb is not None else d.shape)
        try:
            cam = Camera(np.asarray(K, np.float64), np.asarray(cam_to_world, np.float64), int(W), int(H))
        except (ValueError, TypeError):
            self.skipped["invalid_pose"] += 1
            return False
        return self.add_rgbd(RGBDFrame(cam, None if rgb is None else np.asarray(rgb, np.uint8), d, label), features)

    def add_rgbd(self, frame: RGBDFrame, features: ViewFeatures | None = None) -> bool:
        """``add_frame`` for an RGBDFrame (what the readers give)."""
        from ..views.frames import BORDER, backproject
        self._raise_worker_error()
        if not _valid_pose(frame.camera.cam_to_world):
            self.skipped["invalid_pose"] += 1
            return False
        if frame.depth is None or not (frame.depth > 0).any():
            self.skipped["no_depth"] += 1
            return False
        t0 = time.perf_counter()
        xyz, rgb = backproject(frame, border=BORDER)
        with self._lock:
            slots = native.hash_points(self._table, xyz)
            self._ensure(self._table.size)
            native.map_accumulate(slots, xyz, rgb, self._pos, self._col, self._npts, self._obs, self._last,
                                  self.frames)
            self.points_out_of_range += int((slots < 0).sum())
            self.frames += 1
            self._version += 1
            if self.size > self.cfg.max_voxels:
                self._prune()
        self.timings["update"].append(time.perf_counter() - t0)
        if features is not None:
            self._pending.append([self.frames - 1, frame, features])
        elif self.encoder is not None and self._is_keyframe(frame):
            self._submit(frame)
        self._fuse_due()
        if self.snapshot_path and self.cfg.snapshot_every and self.frames % self.cfg.snapshot_every == 0:
            self.save(self.snapshot_path, finish=False)
        return True

    def _is_keyframe(self, frame: RGBDFrame) -> bool:
        from ..views.frames import pose_change
        pose = frame.camera.cam_to_world
        self._since_key += 1
        key = self._last_key_pose is None
        if not key and self.cfg.keyframe_every and self._since_key >= self.cfg.keyframe_every:
            key = True
        if not key:
            move, turn = pose_change(self._last_key_pose, pose)
            key = (self.cfg.keyframe_move > 0 and move >= self.cfg.keyframe_move) or \
                  (self.cfg.keyframe_turn > 0 and turn >= self.cfg.keyframe_turn)
        if key:
            self._last_key_pose, self._since_key = pose.copy(), 0
        return key

    # -- 2D features -----------------------------------------------------------------------------
    def _submit(self, frame: RGBDFrame) -> None:
        """Queue a keyframe for the encoder thread; its features fuse once due (``_fuse_due``)."""
        if self._worker is None:
            self._queue = queue.Queue(maxsize=self.cfg.pending)
            self._worker = threading.Thread(target=self._work, name="pc_ovseg-map-encoder", daemon=True)
            self._worker.start()
        entry = [self.frames - 1, frame, None]
        self._pending.append(entry)
        if self.live:
            while True:
                try:
                    self._queue.put_nowait(entry)
                    return
                except queue.Full:
                    try:
                        old = self._queue.get_nowait()
                        self._queue.task_done()
                        with self._cond:
                            old[2] = _DROPPED
                        self.keyframes_dropped += 1
                    except queue.Empty:
                        pass
        self._queue.put(entry)

    def _work(self) -> None:
        while True:
            entry = self._queue.get()
            try:
                if entry is None:
                    return
                feats = _DROPPED
                if self._error is None:
                    feats = self.encoder.encode(encoder_view(entry[1]))
                    if self.live:  # a live map fuses here: the camera's thread only integrates geometry
                        self.fuse(entry[1], feats)
                        feats = _FUSED
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error, feats = exc, _DROPPED
            finally:
                if entry is not None:
                    with self._cond:
                        entry[2] = feats
                        self._cond.notify_all()
                self._queue.task_done()

    def _fuse_due(self, *, everything: bool = False) -> None:
        """Fuse the encoded keyframes that are due, oldest first, in the calling thread.

        A recording (not ``live``) fuses keyframe k when frame k + ``fuse_lag`` has been
        integrated, waiting for its features if the encoder is behind: the map then sees the
        same geometry at each fusion whatever the threads' timing (the same input gives the same
        map), and voxels first seen just after the keyframe still get its vote. A live map's
        keyframes fuse in the encoder thread as soon as they are encoded (their entries are only
        cleared here), so the camera's thread never waits for them."""
        due = self.frames - 1 - self.cfg.fuse_lag
        while self._pending:
            entry = self._pending[0]
            if not everything and entry[0] > due:
                break
            with self._cond:
                while entry[2] is None and (everything or not self.live) and self._error is None:
                    self._cond.wait(0.5)
            self._raise_worker_error()
            if entry[2] is None:   # live: not encoded yet
                break
            self._pending.popleft()
            if entry[2] is not _DROPPED and entry[2] is not _FUSED:
                self.fuse(entry[1], entry[2])

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def flush(self) -> None:
        """Wait until every keyframe is encoded, and fuse them all."""
        self._fuse_due(everything=True)

    def close(self) -> None:
        """Fuse what is pending and stop the worker thread."""
        self.flush()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = self._queue = None

    def fuse(self, frame: RGBDFrame, feats: ViewFeatures) -> int:
        """Fuse one frame's 2D features into the voxels it sees; returns how many got a vote."""
        from ..views.frames import frame_view
        t0 = time.perf_counter()
        with self._lock:
            n, gen = self.size, self._generation
            xyz = self._pos[:n].copy()
        cam = frame.camera
        ids = _in_front(xyz, cam)
        if len(ids) == 0:
            return 0
        sub = PointCloud(xyz[ids])
        view = frame_view(frame, sub, name=frame.name)
        if self.cfg.normals:
            normals = np.zeros((len(ids), 3), np.float32)
            if len(view.point_ids):
                normals[view.point_ids] = _depth_normals(view, sub.xyz[view.point_ids])
            sub = PointCloud(sub.xyz, normals=normals)
        vis = view_visibility(view, sub, self.fusion_cfg)
        f = feats.sample(vis.pixels)
        w = np.where(np.any(f != 0, axis=1), vis.weights, 0.0).astype(np.float32)
        gids = ids[vis.point_ids]
        with self._lock:
            self._set_dim(feats.dim)
            gids = self._remap_since(gen, gids)
            keep = gids >= 0
            native.fuse_accumulate(self._feat, self._wsum, self._fcount, gids[keep], f[keep], w[keep])
            self.keyframes.append(frame.name)
            self._version += 1
        self.timings["fuse"].append(time.perf_counter() - t0)
        return int((w[keep] > 0).sum())

    def _remap_since(self, gen: int, ids: np.ndarray) -> np.ndarray:
        for g, remap in self._remaps:
            if g > gen:
                ids = np.where(ids >= 0, remap[np.maximum(ids, 0)], -1)
        return ids

    # -- bounded memory ------------------------------------------------------------------------
    def _prune(self) -> None:
        """Drop the least observed voxels (fewest frames, then longest unseen) down to
        PRUNE_TO x max_voxels; slots are renumbered (``_generation``)."""
        n = self.size
        target = int(self.cfg.max_voxels * PRUNE_TO)
        order = np.lexsort((self._last[:n], self._obs[:n]))  # ascending: least observed first
        keep = np.ones(n, np.uint8)
        keep[order[: n - target]] = 0
        remap = self._table.keep(keep)
        kept = keep.astype(bool)
        for name in ("_pos", "_col", "_npts", "_obs", "_last", "_wsum", "_fcount", "_feat"):
            a = getattr(self, name)
            if a is None:
                continue
            a[:target] = a[:n][kept]
            a[target:n] = -1 if name == "_last" else 0
        self.voxels_dropped += n - target
        self._generation += 1
        self._remaps = [(g, r) for g, r in self._remaps[-3:]] + [(self._generation, remap)]
        self._version += 1

    # -- snapshots and queries -----------------------------------------------------------------
    def snapshot(self, *, finish: bool = False) -> FeatureCloud:
        """The map as a FeatureCloud (a consistent copy taken under the lock). ``finish``: also
        pool over geometric segments / smooth as batch fusion's result does (FusionConfig)."""
        with self._lock:
            n = self.size
            xyz = self._pos[:n].copy()
            rgb = np.clip(self._col[:n] + 0.5, 0, 255).astype(np.uint8)
            dim = self._dim or 1
            feat = self._feat[:n].copy() if self._feat is not None else np.zeros((n, dim), np.float16)
            wsum, count = self._wsum[:n].copy(), self._fcount[:n].copy()
            fields = {"observations": self._obs[:n].astype(np.int32), "samples": self._npts[:n].astype(np.int64)}
            meta = {"views": len(self.keyframes), "mapping": self.info()}
        cloud = PointCloud(xyz, rgb, fields=fields, origin=self.origin.copy(), source="semantic map")
        fusion = FeatureFusion(0, dim, self.fusion_cfg)
        fusion.n, fusion.acc, fusion.wsum, fusion.count = n, feat, wsum, count
        fusion.totals = np.zeros((n, 0), np.float32)
        cfg = fusion.cfg if finish else replace(fusion.cfg, segments=0.0, smoothing=0.0)
        fusion.cfg = cfg
        return fusion.result(cloud, encoder=self.encoder_spec, class_names=self.class_names, meta=meta)

    def info(self) -> dict:
        """What the map holds and how it was made (written into saved maps' meta)."""
        upd = self.timings["update"]
        return {"format": MAP_FORMAT, "voxel_size": self.voxel_size, "voxels": self.size,
                "frames": self.frames, "skipped": dict(self.skipped), "keyframes": list(self.keyframes),
                "keyframes_dropped": self.keyframes_dropped, "voxels_dropped": self.voxels_dropped,
                "max_voxels": self.cfg.max_voxels, "points_out_of_range": self.points_out_of_range,
                "bytes_per_voxel": round(self.bytes_per_voxel(), 1),
                "update_ms_median": round(1e3 * float(np.median(upd)), 3) if upd else None}

    def query_engine(self, **kw):
        """A QueryEngine on the current snapshot (reused while the map is unchanged)."""
        from ..query import QueryEngine
        with self._lock:
            version = self._version
        if self._engine is None or self._engine[0] != version:
            text_encoder = getattr(self.encoder, "encoder", None)
            if text_encoder is not None and not hasattr(text_encoder, "encode_text"):
                text_encoder = None
            self._engine = (version, QueryEngine(self.snapshot(), text_encoder=text_encoder, **kw))
        return self._engine[1]

    def labels(self, vocabulary, **kw):
        """Per-voxel labels over ``vocabulary`` now (``QueryEngine.labels``)."""
        return self.query_engine().labels(vocabulary, **kw)

    def heatmap(self, text: str, **kw) -> np.ndarray:
        return self.query_engine().heatmap(text, **kw)

    def objects(self, text: str, **kw):
        return self.query_engine().objects(text, **kw)

    # -- files ------------------------------------------------------------------------------------
    def save(self, path, *, finish: bool = True) -> None:
        """Write the map as the FeatureCloud .npz every command reads (atomically)."""
        self.snapshot(finish=finish).save(path)

    @classmethod
    def load(cls, path, *, encoder=None, config: MappingConfig | None = None, **kw) -> "SemanticMap":
        """A saved map (or any FeatureCloud whose points are one per voxel) to keep mapping into."""
        fc = FeatureCloud.load(path)
        info = (fc.meta or {}).get("mapping") or {}
        vs = float(info.get("voxel_size") or (config.voxel_size if config else 0.05))
        cfg = replace(config or MappingConfig(), voxel_size=vs)
        m = cls(vs, fc.features.shape[1], encoder=encoder, config=cfg, encoder_spec=fc.encoder,
                class_names=fc.class_names, **kw)
        xyz = fc.cloud.xyz   # a map keeps world coordinates (origin 0), as the frames' poses are
        if np.asarray(fc.cloud.origin).any():
            xyz = (xyz + np.asarray(fc.cloud.origin)).astype(np.float32)
        slots = native.hash_points(m._table, xyz)
        if m.size != len(xyz) or (slots != np.arange(len(xyz))).any():
            raise InputError(path, f"not a {vs:g} m voxel map: {len(xyz) - m.size:,} points share a voxel "
                                   "with another or lie out of range")
        m._ensure(len(xyz))
        m._pos[:len(xyz)] = xyz
        if fc.cloud.rgb is not None:
            m._col[:len(xyz)] = fc.cloud.rgb
        f = fc.cloud.fields
        m._obs[:len(xyz)] = np.clip(f.get("observations", np.ones(len(xyz))), 0, 0xFFFF)
        m._npts[:len(xyz)] = np.clip(f.get("samples", np.ones(len(xyz))), 0, 0xFFFFFFFF)
        if fc.basis is not None:
            raise InputError(path, "compressed features (--compress) cannot be mapped into; use the uncompressed map")
        m._feat[:len(xyz)] = fc.features
        m._wsum[:len(xyz)] = fc.weight
        m._fcount[:len(xyz)] = fc.view_count
        m.frames = int(info.get("frames", 0))
        m.keyframes = list(info.get("keyframes", []))
        m._last[:len(xyz)] = m.frames - 1
        return m

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _valid_pose(pose: np.ndarray) -> bool:
    """The readers' pose check (io.rgbd.check_pose): finite, rigid, last row 0 0 0 1."""
    from ..io.rgbd import check_pose
    try:
        check_pose("pose", np.asarray(pose, np.float64))
    except InputError:
        return False
    return True


def _in_front(xyz: np.ndarray, cam: Camera) -> np.ndarray:
    """Ids of the map voxels that project into the camera's image in front of it (the candidates
    frame_view then depth-tests; keeps its per-cloud spacing on the seen part of the map)."""
    w2c = cam.world_to_cam.astype(np.float32)
    px, py, pz = (w2c[a, 0] * xyz[:, 0] + w2c[a, 1] * xyz[:, 1] + w2c[a, 2] * xyz[:, 2] + w2c[a, 3]
                  for a in range(3))  # per axis: an (N, 3) @ (3, 3) matmul is slow
    z = pz
    ok = z > 1e-3
    K = cam.K
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * px / z + K[0, 2]
        v = K[1, 1] * py / z + K[1, 2]
    ok &= (u >= -0.5) & (v >= -0.5) & (u < cam.width - 0.5) & (v < cam.height - 0.5)
    return np.flatnonzero(ok)


def _depth_normals(view: View, xyz: np.ndarray) -> np.ndarray:
    """Unit normals at the visible points from the keyframe's depth (central differences of the
    back-projected depth map); where the depth cannot tell, the viewing ray (angle weight 1)."""
    cam, d = view.camera, view.depth.astype(np.float32)
    H, W = d.shape
    K = cam.K
    r, c = view.pixels[:, 0], view.pixels[:, 1]
    r0, r1 = np.clip(r - 1, 0, H - 1), np.clip(r + 1, 0, H - 1)
    c0, c1 = np.clip(c - 1, 0, W - 1), np.clip(c + 1, 0, W - 1)

    def p(rr, cc):
        z = d[rr, cc]
        return np.stack([(cc - K[0, 2]) / K[0, 0] * z, (rr - K[1, 2]) / K[1, 1] * z, z], 1), z > 0
    a, ok_a = p(r, c1)
    b, ok_b = p(r, c0)
    e, ok_e = p(r1, c)
    g, ok_g = p(r0, c)
    n = np.cross(a - b, e - g)
    norm = np.linalg.norm(n, axis=1)
    ok = ok_a & ok_b & ok_e & ok_g & (norm > 1e-12)
    n_world = (n / np.maximum(norm, 1e-12)[:, None]) @ cam.cam_to_world[:3, :3].T
    ray = xyz.astype(np.float64) - cam.center
    ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-9)
    return np.where(ok[:, None], n_world, ray).astype(np.float32)


def encoder_view(frame: RGBDFrame) -> View:
    """What the 2D model sees of a keyframe: its colour image, depth on the colour grid and
    camera (no points yet: the map's visibility is decided when the features fuse)."""
    cam = frame.camera
    H, W = cam.height, cam.width
    d = frame.depth
    if d is not None and d.shape != (H, W):
        rr = np.minimum(((np.arange(H) + 0.5) * d.shape[0] / H).astype(int), d.shape[0] - 1)
        cc = np.minimum(((np.arange(W) + 0.5) * d.shape[1] / W).astype(int), d.shape[1] - 1)
        d = d[rr[:, None], cc[None, :]]
    depth = np.zeros((H, W), np.float32) if d is None else np.ascontiguousarray(d, np.float32)
    rgb = frame.color if frame.color is not None else np.full((H, W, 3), 128, np.uint8)
    return View(cam, np.ascontiguousarray(rgb[..., :3], np.uint8), depth, np.full((H, W), -1, np.int64),
                np.zeros(0, np.int64), np.zeros((0, 2), np.int32), name=frame.name, granularity="frame")
