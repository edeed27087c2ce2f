"""describe(): what a file or RGB-D folder holds, as a JSON-ready dict; and its text form."""
from __future__ import annotations

import numpy as np

from ..data import FrameSequence, Mesh
from ..errors import InputError
from ._common import count_summary

LABEL_FIELDS = ("label", "labels", "classification", "semantic", "class")
DEPTH_SAMPLE_FRAMES = 20

# ASPRS LAS 1.4 standard classes, for readable histograms of LAS classification
ASPRS = {0: "never classified", 1: "unclassified", 2: "ground", 3: "low vegetation",
         4: "medium vegetation", 5: "high vegetation", 6: "building", 7: "low point (noise)",
         8: "model key-point", 9: "water", 10: "rail", 11: "road surface", 12: "overlap",
         13: "wire guard", 14: "wire conductor", 15: "transmission tower", 16: "wire connector",
         17: "bridge deck", 18: "high noise"}


def describe(path, layout: str | None = None) -> dict:
    """Counts, fields, bounds, label histogram / organised grid; frames, intrinsics, depth range."""
    from . import read
    from .rosbag import describe_bag, is_rosbag
    if is_rosbag(path):
        return describe_bag(path)
    try:
        obj = read(path, layout=layout)
    except InputError:
        labels = _label_file(path)
        if labels is None:
            raise
        return {"path": str(path), "type": "labels", "points": int(len(labels)), "fields": ["label"],
                "label_field": "label", "label_histogram": count_summary(labels)}
    if isinstance(obj, FrameSequence):
        return _describe_frames(obj)
    d = {"path": str(path)}
    cloud = obj.to_point_cloud() if isinstance(obj, Mesh) else obj
    d["type"] = "mesh" if isinstance(obj, Mesh) else "point_cloud"
    d["points"] = len(cloud)
    if isinstance(obj, Mesh):
        d["faces"] = int(len(obj.faces))
    d["fields"] = cloud.field_names()
    finite = np.isfinite(cloud.xyz).all(1)
    if cloud.grid_shape is not None:
        d["organized"] = list(cloud.grid_shape)
        d["valid_points"] = int(finite.sum())
    sub = cloud.xyz[finite] if not finite.all() else cloud.xyz
    lo, hi = (sub.min(0) + cloud.origin, sub.max(0) + cloud.origin) if len(sub) else (np.full(3, np.nan),) * 2
    d["bounds"] = {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}
    if cloud.origin.any():
        d["origin"] = cloud.origin.tolist()
    header = _result_header(path)
    fields = ([header.get("pred_field", "label")] if header else []) + list(LABEL_FIELDS)
    for name in fields:
        if name in cloud.fields and cloud.fields[name].ndim == 1:
            hist = count_summary(cloud.fields[name])
            if hist:
                d["label_field"] = name
                d["label_histogram"] = hist
                break
    if header:  # a pc_ovseg export: its ids read as the classes it was labelled with
        names = {str(c["id"]): str(c["name"]) for c in header.get("classes", []) if "id" in c and "name" in c}
        names["-1"] = "unseen"
        d["labelset"] = header.get("labelset")
        d["label_names"] = {k: names.get(k, f"class {k}") for k in d.get("label_histogram", {})}
    return d


def _result_header(path) -> dict | None:
    """The result header of an export (pc_ovseg.export), or None for any other file."""
    try:
        from ..export import read_result_header
        return read_result_header(path)
    except InputError:
        return None


def _describe_frames(seq: FrameSequence) -> dict:
    cam = seq.cameras[0]
    centres = np.array([c.center for c in seq.cameras])
    d = {"path": seq.source, "type": "rgbd_frames", "frames": len(seq),
         "fields": [k for k, on in (("color", seq.has_color), ("depth", seq.has_depth)) if on] + ["pose"],
         "intrinsics": {"fx": float(cam.K[0, 0]), "fy": float(cam.K[1, 1]), "cx": float(cam.K[0, 2]),
                        "cy": float(cam.K[1, 2]), "width": cam.width, "height": cam.height},
         "bounds": {"min": centres.min(0).tolist(), "max": centres.max(0).tolist()},
         "bounds_of": "camera centres"}
    if seq.has_depth:
        idx = np.unique(np.linspace(0, len(seq) - 1, min(len(seq), DEPTH_SAMPLE_FRAMES)).astype(int))
        lo, hi, valid, total = np.inf, -np.inf, 0, 0
        depth_wh = None
        for i in idx:
            dep = seq[int(i)].depth
            if dep is None:
                continue
            depth_wh = [dep.shape[1], dep.shape[0]]
            v = dep[dep > 0]
            valid += v.size
            total += dep.size
            if v.size:
                lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        d["depth_range"] = [lo, hi] if valid else None
        d["depth_valid_fraction"] = valid / total if total else 0.0
        d["depth_size"] = depth_wh
        d["depth_sampled_frames"] = int(len(idx))
    return d


def format_description(d: dict) -> str:
    """Human-readable lines for ``pc-ovseg info``."""
    lines = [f"{d.get('path')}: {d.get('type', '').replace('_', ' ')}"]
    if d.get("type") == "rosbag" and "frames" not in d:  # a bag that cannot be mapped: its topics
        from .rosbag import format_topics
        return "\n".join(lines + format_topics(d))
    if "frames" in d:
        k = d["intrinsics"]
        lines.append(f"  frames      {d['frames']:,}  ({', '.join(d['fields'])})")
        lines.append(f"  intrinsics  fx={k['fx']:g} fy={k['fy']:g} cx={k['cx']:g} cy={k['cy']:g}  "
                     f"image {k['width']}x{k['height']}")
        if d.get("depth_range"):
            a, b = d["depth_range"]
            lines.append(f"  depth       {a:.3f} .. {b:.3f} m  ({100 * d['depth_valid_fraction']:.1f}% valid, "
                         f"{d['depth_size'][0]}x{d['depth_size'][1]}, {d['depth_sampled_frames']} frames sampled)")
        b = d["bounds"]
        lines.append("  cameras     " + _bounds(b))
        if d.get("type") == "rosbag":
            from .rosbag import format_topics
            lines += format_topics(d)
        return "\n".join(lines)
    lines.append(f"  points      {d['points']:,}" + (f"  faces {d['faces']:,}" if "faces" in d else ""))
    if "organized" in d:
        h, w = d["organized"]
        lines.append(f"  organized   {w}x{h} grid (W x H), {d['valid_points']:,} valid points (NaN kept)")
    lines.append(f"  fields      {' '.join(d['fields'])}")
    if "bounds" in d:  # label files have none
        lines.append(f"  bounds      {_bounds(d['bounds'])}")
    if "origin" in d:
        lines.append(f"  origin      {' '.join(f'{v:.3f}' for v in d['origin'])} (xyz stored relative)")
    if "label_histogram" in d:
        field = d["label_field"]
        lines.append(f"  {field} histogram:")
        total = sum(d["label_histogram"].values())
        for k, c in d["label_histogram"].items():
            if "label_names" in d:
                name = f"  {d['label_names'][k]}"
            else:
                name = f"  {ASPRS.get(int(k), 'class ' + k)}" if field == "classification" else ""
            lines.append(f"    {k:>6} {c:>10,}  {100 * c / total:5.1f}%{name}")
    return "\n".join(lines)


def _bounds(b: dict) -> str:
    lo, hi = b["min"], b["max"]
    return "  ".join(f"{a}: {l:.3f} .. {h:.3f}" for a, l, h in zip("xyz", lo, hi))


def _label_file(path) -> np.ndarray | None:
    """A per-point label file (1-D .npy, SemanticKITTI .label, one id per line) is not a cloud,
    but ``info`` on it should still say what it holds; None when it is not one either."""
    import os

    from .arrays import read_labels
    if os.path.splitext(str(path))[1].lower() not in (".npy", ".label", ".txt"):
        return None
    try:
        return read_labels(path)
    except InputError:
        return None
