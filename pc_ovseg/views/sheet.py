"""Writing views to disk: per-view PNG / depth / camera / index files and a contact sheet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data import View


def contact_sheet(views, path, cols: int | None = None, *, thumb_width: int = 240) -> Path:
    """One PNG grid of the views' images (each labelled with its name and granularity)."""
    views = list(views)
    if not views:
        raise ValueError("contact_sheet needs at least one view")
    cols = cols or int(np.ceil(np.sqrt(len(views) * 3 / 4))) or 1
    cols = max(1, min(cols, len(views)))
    rows = int(np.ceil(len(views) / cols))
    h0, w0 = views[0].hw
    tw = thumb_width
    th = max(1, round(tw * h0 / w0))
    sheet = Image.new("RGB", (cols * tw, rows * th), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for k, v in enumerate(views):
        im = Image.fromarray(v.rgb).resize((tw, th), Image.BILINEAR)
        x, y = (k % cols) * tw, (k // cols) * th
        sheet.paste(im, (x, y))
        draw.rectangle([x, y, x + tw - 1, y + th - 1], outline=(40, 40, 40))
        draw.text((x + 4, y + 2), f"{k} {v.granularity}", fill=(255, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def save_view(view: View, out_dir, stem: str, *, depth_format: str = "png") -> dict:
    """Write ``stem``.png (colour), ``stem``.depth.png (uint16 mm) or .npy, ``stem``.json (camera),
    ``stem``.index.npy; returns the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"image": f"{stem}.png", "camera": f"{stem}.json", "index": f"{stem}.index.npy"}
    Image.fromarray(view.rgb).save(out / files["image"])
    if depth_format == "npy":
        files["depth"] = f"{stem}.depth.npy"
        np.save(out / files["depth"], view.depth.astype(np.float32))
    else:
        files["depth"] = f"{stem}.depth.png"
        mm = np.clip(np.round(view.depth * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(mm).save(out / files["depth"])
    np.save(out / files["index"], view.index.astype(np.int32 if view.index.max(initial=-1) < 2**31 else np.int64))
    meta = {"name": view.name, "granularity": view.granularity, "camera": view.camera.to_dict(),
            "visible_points": int(len(view.point_ids)), **{k: v for k, v in view.meta.items() if _jsonable(v)}}
    with open(out / files["camera"], "w") as fh:
        json.dump(meta, fh, indent=1)
    return files


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
