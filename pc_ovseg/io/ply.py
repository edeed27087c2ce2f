"""PLY: ascii and binary (both endians), points and meshes, every vertex property kept.

Own vectorised parser (one ``np.frombuffer`` per element, uniform face lists read as one 2D
array); non-uniform polygon lists fall back to plyfile. The writer emits binary little endian
and records pc_ovseg metadata in header comments (origin, original field dtype/shape) so a
written file reads back bit-exact while staying a plain PLY for other tools.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..data import Mesh, PointCloud
from ..errors import InputError
from ._common import check_file, exc_text, make_cloud, output_fields, read_bytes, register

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_WRITE_TYPES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
                "f4": "float", "f8": "double"}
_RGB_NAMES = [("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")]
_FACE_LISTS = ("vertex_indices", "vertex_index")
_META = "pc_ovseg"


class _Element:
    def __init__(self, name: str, count: int):
        self.name, self.count = name, count
        self.props: list[tuple[str, str, str | None]] = []  # (name, dtype, list count dtype or None)

    @property
    def has_list(self) -> bool:
        return any(p[2] for p in self.props)


def _parse_header(path: str, data: bytes):
    if not data.startswith(b"ply"):
        raise InputError(path, "not a PLY file (missing 'ply' magic)")
    end = data.find(b"end_header")
    if end < 0:
        raise InputError(path, "PLY header has no end_header")
    nl = data.find(b"\n", end)
    body_start = len(data) if nl < 0 else nl + 1
    try:
        lines = data[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise InputError(path, "PLY header is not ASCII text") from None
    fmt, elements, comments = None, [], []
    for ln in lines:
        tok = ln.split()
        if not tok:
            continue
        key = tok[0]
        try:
            if key == "format":
                fmt = tok[1]
                if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
                    raise InputError(path, f"unknown PLY format {fmt!r}")
            elif key == "element":
                count = int(tok[2])
                if count < 0:
                    raise ValueError
                if any(e.name == tok[1] for e in elements):
                    raise InputError(path, f"PLY header repeats element {tok[1]!r}")
                elements.append(_Element(tok[1], count))
            elif key == "property":
                if not elements:
                    raise InputError(path, "PLY property before any element")
                if tok[1] == "list":
                    prop = (tok[4], PLY_TYPES[tok[3]], PLY_TYPES[tok[2]])
                else:
                    prop = (tok[2], PLY_TYPES[tok[1]], None)
                if any(q[0] == prop[0] for q in elements[-1].props):  # a dict would keep only one
                    raise InputError(path, f"PLY element {elements[-1].name!r} repeats property {prop[0]!r}")
                elements[-1].props.append(prop)
            elif key == "comment" and len(tok) > 1 and tok[1] == _META:
                comments.append(ln.split(None, 2)[2])
        except (IndexError, ValueError):
            raise InputError(path, f"bad PLY header line {ln.strip()!r}") from None
        except KeyError as exc:
            raise InputError(path, f"unknown PLY property type {exc.args[0]!r}") from None
    if fmt is None:
        raise InputError(path, "PLY header has no format line")
    return fmt, elements, comments, body_start


def _rows(el, n=None) -> str:
    """'3 vertices' / '1 faces' / "2 'edge' rows": how messages count an element's records."""
    n = el.count if n is None else n
    return f"{n} " + {"vertex": "vertices", "face": "faces"}.get(el.name, f"{el.name!r} rows")


def _check_tail(path, data, pos, el, record):
    """Bytes after the last element mean the header's counts are wrong: whole records are points
    the header does not declare (or a count off by some), anything else is junk. A few NUL or
    whitespace bytes of padding are tolerated."""
    tail = len(data) - pos
    if not tail or (not data[pos:].strip(b"\0 \t\r\n") and (not record or tail < record)):
        return
    if el is not None and record and tail % record == 0:
        raise InputError(path, f"PLY header says {_rows(el)} but the data holds {_rows(el, el.count + tail // record)}")
    raise InputError(path, f"PLY has {tail} bytes after its last element"
                           f"{f' {el.name!r}' if el is not None else ''}: header counts disagree with the data")


def _read_binary(path, data, fmt, elements, pos):
    bo = "<" if fmt == "binary_little_endian" else ">"
    out = {}
    last = record = None
    for el in elements:
        last = el
        if not el.has_list:
            dt = np.dtype([(n, bo + t) for n, t, _ in el.props])
            record = dt.itemsize
            need = dt.itemsize * el.count
            if pos + need > len(data):
                held = (len(data) - pos) // dt.itemsize if dt.itemsize else 0
                raise InputError(path, f"truncated PLY: header says {_rows(el)} but the data holds {held} "
                                       f"({need} bytes needed, {len(data) - pos} left)")
            out[el.name] = np.frombuffer(data, dt, el.count, pos)
            pos += need
            continue
        # uniform lists (all triangles, say): one structured read, then verify the counts
        record = None
        dt0 = np.dtype([(n, bo + (c or t)) for n, t, c in el.props])  # lengths read as scalars
        if el.count == 0:
            out[el.name] = {n: np.zeros((0, 3), t) for n, t, c in el.props}
            continue
        if pos + dt0.itemsize > len(data):
            raise InputError(path, f"truncated PLY: element {el.name!r} has no data")
        first = np.frombuffer(data, dt0, 1, pos)[0]
        fields = []
        for n, t, c in el.props:
            if c:
                k = int(first[n])
                if k < 0 or k * np.dtype(t).itemsize > len(data) - pos:
                    raise InputError(path, f"PLY list {n!r} of element {el.name!r} has list length {k} "
                                           f"({len(data) - pos} bytes left)")
                fields += [("_n_" + n, bo + c), (n, bo + t, (k,))]
            else:
                fields.append((n, bo + t))
        dt = np.dtype(fields)
        need = dt.itemsize * el.count
        arr = np.frombuffer(data, dt, el.count, pos) if pos + need <= len(data) else None
        uniform = arr is not None and all(
            np.all(arr["_n_" + n] == arr["_n_" + n][0]) for n, _, c in el.props if c)
        if not uniform or sum(1 for p in el.props if p[2]) > 1:
            return None  # variable-length or several lists (or a truncated file): let plyfile decide
        out[el.name] = arr
        record = dt.itemsize
        pos += need
    _check_tail(path, data, pos, last, record)
    return out


def _read_ascii(path, data, elements, pos):
    lines = [ln for ln in data[pos:].split(b"\n") if ln.strip()]
    out, row = {}, 0
    for el in elements:
        chunk = lines[row:row + el.count]
        if len(chunk) < el.count:
            raise InputError(path, f"truncated PLY: header says {_rows(el)} but the data holds {len(chunk)}")
        row += el.count
        if el.count == 0:
            out[el.name] = {n: np.zeros(0, t) for n, t, _ in el.props}
            continue
        if el.has_list:
            toks = [ln.split() for ln in chunk]
            width = len(toks[0])
            if any(len(t) != width for t in toks):
                return None  # ragged lists: plyfile
        else:  # fixed width: one C-level conversion of all tokens
            width = len(el.props)
            toks = b" ".join(chunk).split()
            if len(toks) != width * el.count:
                raise InputError(path, f"PLY element {el.name!r} has {len(toks)} values, header implies "
                                       f"{el.count} rows x {width} (values per row differ)")
        try:
            table = np.array(toks, dtype="S").astype(np.float64).reshape(el.count, width)
        except ValueError:
            raise InputError(path, f"PLY element {el.name!r} has a non-numeric value") from None
        cols, c = {}, 0
        for n, t, lc in el.props:
            if lc:
                k = int(table[0, c])
                if k < 0:
                    raise InputError(path, f"PLY list {n!r} of element {el.name!r} has list length {k}")
                if not np.all(table[:, c] == k):
                    return None
                cols[n] = table[:, c + 1:c + 1 + k].astype(t)
                c += 1 + k
            else:
                if c >= width:
                    raise InputError(path, f"PLY element {el.name!r} has fewer values than properties")
                cols[n] = table[:, c].astype(t)
                c += 1
        if c != width:
            raise InputError(path, f"PLY element {el.name!r} has {width} values per row, header says {c}")
        out[el.name] = cols
    if row < len(lines):  # rows beyond the declared counts: the header's count is wrong
        last = elements[-1] if elements else None
        if last is None:
            raise InputError(path, f"PLY declares no element but holds {len(lines) - row} data rows")
        raise InputError(path, f"PLY header says {_rows(last)} but the data holds "
                               f"{_rows(last, last.count + len(lines) - row)}")
    return out


def _read_plyfile(path):
    """Fallback for variable-length lists (mixed polygons)."""
    import plyfile
    try:
        ply = plyfile.PlyData.read(path)
    except Exception as exc:  # plyfile raises many types for broken files
        raise InputError(path, f"malformed PLY ({exc_text(exc)})") from None
    out = {}
    for el in ply.elements:
        d = el.data
        cols = {}
        for n in d.dtype.names:
            col = d[n]
            if col.dtype == object:
                cols[n] = list(col)
            else:
                cols[n] = np.asarray(col)
        out[el.name] = cols
    return out


def _names(el):
    return list(el.dtype.names) if isinstance(el, np.ndarray) else list(el)


def _triangulate(path, lists) -> np.ndarray:
    """Faces as (F, 3): uniform k-gons are fanned in one vectorised step; ragged lists per polygon."""
    if isinstance(lists, np.ndarray) and lists.ndim == 2:
        k = lists.shape[1]
        if k < 3:
            raise InputError(path, f"PLY faces have {k} vertices (need >= 3)")
        idx = np.arange(1, k - 1)
        return np.stack([np.repeat(lists[:, :1], k - 2, 1), lists[:, idx], lists[:, idx + 1]], 2).reshape(-1, 3)
    tris = []
    for poly in lists:
        poly = np.asarray(poly)
        if len(poly) < 3:
            raise InputError(path, f"PLY face with {len(poly)} vertices (need >= 3)")
        tris.append(np.stack([np.full(len(poly) - 2, poly[0]), poly[1:-1], poly[2:]], 1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


def parse_ply(path: str) -> dict:
    """Elements of a PLY file: name -> structured array or {property: array}; plus meta."""
    check_file(path)
    data = read_bytes(path)
    fmt, elements, comments, pos = _parse_header(path, data)
    if fmt == "ascii":
        out = _read_ascii(path, data, elements, pos)
    else:
        out = _read_binary(path, data, fmt, elements, pos)
    if out is None:
        out = _read_plyfile(path)
    meta = {}
    for c in comments:
        try:
            k, v = c.split(None, 1)
            meta.setdefault(k, []).append(json.loads(v))
        except ValueError:
            continue
    return {"elements": out, "meta": meta}


def _field_spec(path, spec) -> tuple[str, list[int], np.dtype]:
    """A ``comment pc_ovseg field`` entry, checked: it retypes data, so a hostile one could turn a
    property into objects or strings."""
    try:
        name, shape, dtype = str(spec["name"]), [int(k) for k in spec.get("shape", [])], np.dtype(spec["dtype"])
    except (TypeError, ValueError, KeyError, AttributeError):
        raise InputError(path, f"bad pc_ovseg field comment {json.dumps(spec)[:80]}") from None
    if dtype.kind not in "biuf" or any(k <= 0 for k in shape):
        raise InputError(path, f"pc_ovseg field comment for {name!r} gives dtype {dtype.str!r} shape {shape} "
                               f"(numeric fields only)")
    return name, shape, dtype


def read_ply(path: str, layout=None) -> PointCloud | Mesh:
    """A PLY with a face element is a Mesh, otherwise a PointCloud; extra properties -> fields."""
    path = os.fspath(path)
    parsed = parse_ply(path)
    els, meta = parsed["elements"], parsed["meta"]
    if "vertex" not in els:
        raise InputError(path, "PLY has no 'vertex' element")
    v = els["vertex"]
    names = _names(v)
    if not {"x", "y", "z"} <= set(names):
        raise InputError(path, "PLY vertex element lacks x, y, z properties")
    xyz = np.stack([np.asarray(v[a]) for a in "xyz"], 1)
    used = {"x", "y", "z"}
    rgb = None
    for trio in _RGB_NAMES:
        if set(trio) <= set(names):
            rgb = np.stack([np.asarray(v[a]) for a in trio], 1)
            used |= set(trio)
            break
    normals = None
    if {"nx", "ny", "nz"} <= set(names):
        normals = np.stack([np.asarray(v[a]) for a in ("nx", "ny", "nz")], 1)
        used |= {"nx", "ny", "nz"}
    fields = {}
    for spec in meta.get("field", []):          # grouped / retyped fields written by pc_ovseg
        name, shape, dtype = _field_spec(path, spec)
        cols = [f"{name}_{i}" for i in range(int(np.prod(shape)))] if shape else [name]
        if set(cols) <= set(names):
            arr = np.stack([np.asarray(v[c]) for c in cols], 1) if shape else np.asarray(v[name])
            fields[name] = arr.astype(dtype).reshape((len(xyz), *shape))
            used |= set(cols)
    for n in names:
        if n not in used:
            fields[n] = np.ascontiguousarray(v[n])
    grid = tuple(int(g) for g in meta["grid"][0]) if "grid" in meta else None
    if grid is not None and grid[0] * grid[1] != len(xyz):
        grid = None
    origin = np.asarray(meta["origin"][0], np.float64) if "origin" in meta else None
    if origin is not None and xyz.dtype != np.float64:
        origin = None  # written relative already
    faces_el = els.get("face")
    if faces_el is not None and len(_names(faces_el)):
        lname = next((n for n in _FACE_LISTS if n in _names(faces_el)), None)
        if lname is None:
            raise InputError(path, "PLY face element has no vertex_indices list")
        lists = faces_el[lname]
        faces = _triangulate(path, lists if not isinstance(lists, np.ndarray) or lists.dtype != object else list(lists))
        if len(faces):
            cloud = make_cloud(path, xyz, rgb=rgb, normals=normals, fields=fields, origin=origin)
            if faces.min() < 0 or faces.max() >= len(cloud):
                raise InputError(path, f"PLY face indices out of range (0..{len(cloud) - 1})")
            return Mesh(cloud.xyz, faces.astype(np.int64), cloud.rgb, cloud.fields, cloud.origin, source=path)
    return make_cloud(path, xyz, rgb=rgb, normals=normals, fields=fields, origin=origin, grid_shape=grid)


register("ply", "cloud|mesh", exts=(".ply",))(read_ply)


# --- writer --------------------------------------------------------------------------------

def _ply_dtype(a: np.ndarray) -> tuple[np.ndarray, str]:
    """A PLY-representable dtype for an array: bool->uchar, int64->int (checked), float16->float."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "b":
        return a.astype(np.uint8), "u1"
    if kind in "iu" and size == 8:
        if len(a) and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            return a.astype(np.float64), "f8"
        return a.astype(np.int32), "i4"
    if kind == "f" and size == 2:
        return a.astype(np.float32), "f4"
    code = a.dtype.str[1:]
    if code not in _WRITE_TYPES:
        raise ValueError(f"field dtype {a.dtype} cannot be written to PLY")
    return a, code


#: RPly (Open3D, many C tools) rejects header lines of 1024 characters or more.
_MAX_COMMENT = 1000


def result_comments(header: dict) -> list[str]:
    """A result header (pc_ovseg.export) as ``pc_ovseg result`` / ``pc_ovseg class`` comments:
    one class per line keeps every line short enough for RPly; a class's prompts are left out
    of its line when they would make it too long."""
    head = {k: v for k, v in header.items() if k != "classes"}
    lines = [f"{_META} result {json.dumps(head)}"]
    for c in header.get("classes", []):
        line = f"{_META} class {json.dumps(c)}"
        if len(line) > _MAX_COMMENT:
            line = f"{_META} class {json.dumps({k: v for k, v in c.items() if k != 'prompts'})}"
        lines.append(line)
    if max(map(len, lines)) > _MAX_COMMENT:
        raise ValueError("result header does not fit in PLY comment lines (class name too long?)")
    return lines


def write_ply(path, cloud: PointCloud | Mesh, *, labels=None, scores=None, colors=None, extra=None,
              header: dict | None = None) -> None:
    """Binary little-endian PLY with xyz, normals, colour, label, score and every field.

    Coordinates are float32 local values when the origin is zero, else float64 world values
    (so other tools see the true position); the origin, an organised grid's (H, W) and fields'
    original dtypes/shapes go in ``comment pc_ovseg ...`` lines for an exact read back. A result
    ``header`` (which field is the prediction, the label set) goes in comments too, and names the
    labels' property (``pred_field``, default ``label``).
    """
    path = os.fspath(path)
    mesh = cloud if isinstance(cloud, Mesh) else None
    if mesh is not None:
        cloud = PointCloud(mesh.vertices, mesh.vertex_rgb, fields=dict(mesh.fields), origin=mesh.origin)
    n = len(cloud)
    cols: list[tuple[str, np.ndarray, str]] = []
    comments: list[str] = []
    if cloud.origin.any():
        w = cloud.world_xyz
        cols += [(a, w[:, i], "f8") for i, a in enumerate("xyz")]
        comments.append(f"{_META} origin {json.dumps(cloud.origin.tolist())}")
    else:
        cols += [(a, cloud.xyz[:, i], "f4") for i, a in enumerate("xyz")]
    if cloud.grid_shape is not None:
        comments.append(f"{_META} grid {json.dumps(list(cloud.grid_shape))}")
    if cloud.normals is not None:
        cols += [(a, cloud.normals[:, i], "f4") for i, a in enumerate(("nx", "ny", "nz"))]
    rgb = cloud.rgb if colors is None else PointCloud(cloud.xyz, colors).rgb
    if rgb is not None:
        cols += [(a, rgb[:, i], "u1") for i, a in enumerate(("red", "green", "blue"))]
    fields = output_fields(cloud, labels, scores, extra, colors=colors,
                           label_name=(header or {}).get("pred_field", "label"))
    if header is not None:
        comments += result_comments(header)
    reserved = {c[0] for c in cols}
    for name, a in fields.items():
        a = np.asarray(a)
        if len(a) != n:
            raise ValueError(f"field {name!r} has {len(a)} rows, expected {n}")
        if name in reserved or not name.replace("_", "a").isalnum():
            raise ValueError(f"field name {name!r} cannot be a PLY property")
        flat = a.reshape(n, -1)
        conv, code = _ply_dtype(flat)
        if a.ndim > 1 or conv.dtype != a.dtype:
            comments.append(f"{_META} field " + json.dumps(
                {"name": name, "shape": list(a.shape[1:]), "dtype": a.dtype.str}))
        if a.ndim > 1:
            cols += [(f"{name}_{i}", conv[:, i], code) for i in range(flat.shape[1])]
        else:
            cols.append((name, conv[:, 0], code))
    dt = np.dtype([(c[0], "<" + c[2]) for c in cols])
    arr = np.empty(n, dt)
    for name, a, _ in cols:
        arr[name] = a
    head = ["ply", "format binary_little_endian 1.0", "comment written by pc_ovseg"]
    head += [f"comment {c}" for c in comments]
    head.append(f"element vertex {n}")
    head += [f"property {_WRITE_TYPES[c[2]]} {c[0]}" for c in cols]
    faces = None
    if mesh is not None:
        head += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices"]
        faces = np.empty(len(mesh.faces), [("n", "u1"), ("v", "<i4", (3,))])
        faces["n"] = 3
        faces["v"] = mesh.faces
    head.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        f.write(arr.tobytes())
        if faces is not None:
            f.write(faces.tobytes())


def iter_ply(path: str, chunk: int = 2_000_000):
    """(world xyz float64, rgb | None, fields) per ``chunk`` vertices of a binary PLY whose vertex
    element comes first with scalar properties only (SensatUrban tiles, scanners' exports),
    memory-mapped so no more than a chunk is read at once; any other PLY is read whole and sliced
    (pc_ovseg.tiles splits clouds with it)."""
    path = check_file(os.fspath(path))
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fmt, elements, comments, pos = _parse_header(path, head)
    v = elements[0] if elements else None
    if fmt == "ascii" or v is None or v.name != "vertex" or any(c is not None for _, _, c in v.props):
        cloud = read_ply(path)
        cloud = cloud.to_point_cloud() if isinstance(cloud, Mesh) else cloud
        for a in range(0, len(cloud), chunk):
            sl = slice(a, a + chunk)
            yield (cloud.xyz[sl].astype(np.float64) + cloud.origin, None if cloud.rgb is None else cloud.rgb[sl],
                   {k: val[sl] for k, val in cloud.fields.items()})
        return
    bo = "<" if fmt == "binary_little_endian" else ">"
    dt = np.dtype([(n, bo + t) for n, t, _ in v.props])
    names = [n for n, _, _ in v.props]
    if not {"x", "y", "z"} <= set(names):
        raise InputError(path, "PLY vertex element lacks x, y, z properties")
    if pos + v.count * dt.itemsize > os.path.getsize(path):
        raise InputError(path, f"PLY is truncated: {v.count:,} vertices of {dt.itemsize} bytes do not fit")
    origin = np.zeros(3)
    for c in comments:
        k, _, val = c.partition(" ")
        if k == "origin" and dt["x"].kind == "f" and dt["x"].itemsize == 4:
            try:
                origin = np.asarray(json.loads(val), np.float64).reshape(3)
            except ValueError:
                pass
    trio = next((t for t in _RGB_NAMES if set(t) <= set(names)), None)
    rest = [n for n in names if n not in {"x", "y", "z", *(trio or ())}]
    mm = np.memmap(path, dtype=dt, mode="r", offset=pos, shape=(v.count,))
    for a in range(0, v.count, chunk):
        block = mm[a:a + chunk]
        xyz = np.stack([np.asarray(block[c], np.float64) for c in "xyz"], 1) + origin
        rgb = None if trio is None else np.stack([np.asarray(block[c]) for c in trio], 1)
        if rgb is not None and rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8) if rgb.dtype.kind == "f" else \
                ((rgb >> 8) if rgb.max(initial=0) > 255 else rgb).astype(np.uint8)
        yield xyz, rgb, {n: np.ascontiguousarray(block[n]) for n in rest}
    del mm
