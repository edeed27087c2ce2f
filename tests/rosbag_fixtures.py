"""ROS 1 / ROS 2 bags written with rosbags' own writers from posed RGB-D frames (7-Scenes in the
tests), for pc_ovseg.io.rosbag and ``pc-ovseg map``: Image (rgb8 / bgr8 colour, 16UC1 mm or
32FC1 m depth) or CompressedImage colour, CameraInfo, and the pose as PoseStamped, Odometry or
/tf (a moving base) + /tf_static (the camera on it)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

T0 = 1_700_000_000.0   # first frame's stamp (s)
DT = 1.0 / 30           # seconds between frames


def _quat(R: np.ndarray) -> tuple[float, float, float, float]:
    from scipy.spatial.transform import Rotation
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return float(x), float(y), float(z), float(w)


class _Msgs:
    """Message builders of one typestore (ROS 1 field names differ: K vs k, Header.seq)."""

    def __init__(self, ros1: bool):
        from rosbags.typesys import Stores, get_typestore
        self.ros1 = ros1
        self.ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
        if "tf2_msgs/msg/TFMessage" not in self.ts.types:  # ROS 1's store lacks tf2_msgs
            from rosbags.typesys import get_types_from_msg
            self.ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
        self.T = self.ts.types

    def header(self, t: float, frame: str, seq: int = 0):
        sec = int(t)
        stamp = self.T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9)))
        H = self.T["std_msgs/msg/Header"]
        return H(seq=seq, stamp=stamp, frame_id=frame) if self.ros1 else H(stamp=stamp, frame_id=frame)

    def image(self, t, frame, arr: np.ndarray, encoding: str):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        step = arr.strides[0]
        return self.T["sensor_msgs/msg/Image"](header=self.header(t, frame), height=h, width=w, encoding=encoding,
                                               is_bigendian=0, step=step,
                                               data=np.frombuffer(arr.tobytes(), np.uint8))

    def compressed(self, t, frame, rgb: np.ndarray, fmt: str = "png"):
        from PIL import Image
        b = io.BytesIO()
        Image.fromarray(rgb).save(b, fmt.upper())
        return self.T["sensor_msgs/msg/CompressedImage"](header=self.header(t, frame), format=fmt,
                                                         data=np.frombuffer(b.getvalue(), np.uint8))

    def info(self, t, frame, K, w, h):
        C = self.T["sensor_msgs/msg/CameraInfo"]
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        P = np.zeros((3, 4))
        P[:, :3] = K
        kw = dict(header=self.header(t, frame), height=h, width=w, distortion_model="plumb_bob",
                  binning_x=0, binning_y=0, roi=roi)
        arrays = {"D": np.zeros(5), "K": np.asarray(K, np.float64).ravel(), "R": np.eye(3).ravel(), "P": P.ravel()}
        kw.update({k if self.ros1 else k.lower(): v for k, v in arrays.items()})
        return C(**kw)

    def pose(self, m: np.ndarray):
        G = self.T
        p = G["geometry_msgs/msg/Point"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3]))
        x, y, z, w = _quat(m[:3, :3])
        return G["geometry_msgs/msg/Pose"](position=p, orientation=G["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))

    def pose_stamped(self, t, frame, m):
        return self.T["geometry_msgs/msg/PoseStamped"](header=self.header(t, frame), pose=self.pose(m))

    def transform(self, t, parent, child, m):
        G = self.T
        x, y, z, w = _quat(m[:3, :3])
        tr = G["geometry_msgs/msg/Transform"](
            translation=G["geometry_msgs/msg/Vector3"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
            rotation=G["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))
        ts = G["geometry_msgs/msg/TransformStamped"](header=self.header(t, parent), child_frame_id=child, transform=tr)
        return G["tf2_msgs/msg/TFMessage"](transforms=[ts])


# the camera sits on a base: base_T_cam fixed (/tf_static), world_T_base = world_T_cam inv(base_T_cam)
BASE_T_CAM = np.array([[0.0, 0.0, 1.0, 0.10], [-1.0, 0.0, 0.0, 0.02], [0.0, -1.0, 0.0, 0.35], [0, 0, 0, 1]])


def write_bag(path, frames, *, ros1: bool = False, pose: str = "pose", storage: str = "sqlite3",
              depth: str = "16UC1", color: str = "rgb8", color_offset: float = 0.0, skip_tf_static: bool = False,
              depth_encoding: str | None = None, no_depth: bool = False, bad_pose_at: tuple = ()) -> Path:
    """Write ``frames`` (RGBDFrames: colour, depth in metres, camera) as a bag at ``path`` (ROS 1:
    a .bag file; ROS 2: a folder, ``storage`` sqlite3 or mcap). ``pose``: "pose" (PoseStamped of
    the camera), "odom" (Odometry) or "tf"; ``color``: rgb8, bgr8 or png (CompressedImage);
    ``depth``: 16UC1 (mm), 32FC1 (m) or compressedDepth (PNG, mm). The rest make broken bags for the error tests."""
    path = Path(path)
    M = _Msgs(ros1)
    if ros1:
        from rosbags.rosbag1 import Writer
        writer = Writer(path)
        ser = lambda msg, typ: M.ts.serialize_ros1(msg, typ)  # noqa: E731
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=8, storage_plugin=plugin)
        ser = lambda msg, typ: M.ts.serialize_cdr(msg, typ)  # noqa: E731
    cam_frame = "camera_optical"
    with writer as w:
        def conn(topic, typ):
            return w.add_connection(topic, typ, typestore=M.ts)
        c_rgb = conn("/camera/color/image_raw" if color != "png" else "/camera/color/compressed",
                     "sensor_msgs/msg/Image" if color != "png" else "sensor_msgs/msg/CompressedImage")
        c_depth = None if no_depth else (
            conn("/camera/depth/image_raw/compressedDepth", "sensor_msgs/msg/CompressedImage")
            if depth == "compressedDepth" else conn("/camera/depth/image_raw", "sensor_msgs/msg/Image"))
        c_info = conn("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo")
        c_pose = c_tf = c_static = None
        if pose == "pose":
            c_pose = conn("/camera/pose", "geometry_msgs/msg/PoseStamped")
        elif pose == "odom":
            c_pose = conn("/odom", "nav_msgs/msg/Odometry")
        else:
            c_tf = conn("/tf", "tf2_msgs/msg/TFMessage")
            if not skip_tf_static:
                c_static = conn("/tf_static", "tf2_msgs/msg/TFMessage")

        def put(c, t, msg):
            w.write(c, int(round(t * 1e9)), ser(msg, c.msgtype))
        if c_static is not None:
            put(c_static, T0 - 0.5, M.transform(T0 - 0.5, "base_link", cam_frame, BASE_T_CAM))
        for k, f in enumerate(frames):
            t = T0 + k * DT
            cam = f.camera
            m = cam.cam_to_world.copy()
            if k in bad_pose_at:
                m[:3, 3] = np.nan   # lost tracking: the frame must be skipped
            if c_pose is not None and c_pose.msgtype.endswith("PoseStamped"):
                put(c_pose, t, M.pose_stamped(t, "world", m))
            elif c_pose is not None:
                T = M.T
                cov = np.zeros(36)
                odom = T["nav_msgs/msg/Odometry"](
                    header=M.header(t, "world"), child_frame_id=cam_frame,
                    pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=M.pose(m), covariance=cov),
                    twist=T["geometry_msgs/msg/TwistWithCovariance"](
                        twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                           angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                        covariance=cov))
                put(c_pose, t, odom)
            else:
                put(c_tf, t, M.transform(t, "world", "base_link", m @ np.linalg.inv(BASE_T_CAM)))
            put(c_info, t, M.info(t, cam_frame, cam.K, cam.width, cam.height))
            tc = t + color_offset
            if color == "png":
                put(c_rgb, tc, M.compressed(tc, cam_frame, f.color))
            else:
                img = f.color if color == "rgb8" else np.ascontiguousarray(f.color[..., ::-1])
                put(c_rgb, tc, M.image(tc, cam_frame, img, color))
            if c_depth is not None and depth == "compressedDepth":
                # compressed_depth_image_transport: a 12-byte config header, then a 16-bit PNG
                from PIL import Image
                b = io.BytesIO()
                Image.fromarray(np.round(f.depth * 1000).astype(np.uint16)).save(b, "PNG")
                data = np.frombuffer(b"\0" * 12 + b.getvalue(), np.uint8)
                put(c_depth, t, M.T["sensor_msgs/msg/CompressedImage"](
                    header=M.header(t, cam_frame), format="16UC1; compressedDepth png", data=data))
            elif c_depth is not None:
                if depth == "16UC1":
                    arr, enc = np.round(f.depth * 1000).astype(np.uint16), "16UC1"
                else:
                    arr, enc = f.depth.astype(np.float32), "32FC1"
                put(c_depth, t, M.image(t, cam_frame, arr, depth_encoding or enc))
    return path


def rigid_frames(frames):
    """The frames with their rotations made exactly orthonormal (7-Scenes' are to 2e-4; a bag's
    quaternions are exact), so a folder and a bag of the same frames hold the same poses."""
    from scipy.spatial.transform import Rotation

    from pc_ovseg.data import Camera, RGBDFrame
    out = []
    for f in frames:
        m = f.camera.cam_to_world.copy()
        m[:3, :3] = Rotation.from_matrix(m[:3, :3]).as_matrix()
        out.append(RGBDFrame(Camera(f.camera.K, m, f.camera.width, f.camera.height), f.color, f.depth, f.name))
    return out


def write_manifest(path, frames, folder) -> Path:
    """A pc_ovseg.frames/1 manifest of 7-Scenes ``frames`` (their files in ``folder``, not copied)."""
    import json
    K = frames[0].camera.K
    d = {"format": "pc_ovseg.frames/1", "depth_scale": 1000.0, "invalid_depth": [0, 65535],
         "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                        "width": frames[0].camera.width, "height": frames[0].camera.height},
         "frames": [{"name": f.name, "color": str(Path(folder) / f"{f.name}.color.jpg"),
                     "depth": str(Path(folder) / f"{f.name}.depth.png"), "pose": f.camera.cam_to_world.tolist()}
                    for f in frames]}
    Path(path).write_text(json.dumps(d))
    return Path(path)
