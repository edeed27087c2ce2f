"""Colours for exports and legends: a label palette, a heat colormap, legend PNGs."""
from __future__ import annotations

import numpy as np

_BASE = np.array([
    [174, 199, 232], [152, 223, 138], [31, 119, 180], [255, 187, 120], [188, 189, 34],
    [140, 86, 75], [255, 152, 150], [214, 39, 40], [197, 176, 213], [148, 103, 189],
    [196, 156, 148], [23, 190, 207], [247, 182, 210], [219, 219, 141], [255, 127, 14],
    [158, 218, 229], [44, 160, 44], [112, 128, 144], [227, 119, 194], [82, 84, 163],
], np.uint8)
UNSEEN_RGB = np.array([60, 60, 60], np.uint8)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 distinct colours (ScanNet-like first 20, then golden-ratio hues)."""
    if n <= len(_BASE):
        return _BASE[:n].copy()
    extra = []
    for i in range(n - len(_BASE)):
        h = (i * 0.618033988749895) % 1.0
        extra.append(_hsv_to_rgb(h, 0.65, 0.95))
    return np.concatenate([_BASE, np.array(extra, np.uint8)])


def _hsv_to_rgb(h: float, s: float, v: float) -> list[int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return [int(r * 255), int(g * 255), int(b * 255)]


def label_colors(labels: np.ndarray, n: int) -> np.ndarray:
    """Per-point colours for labels in [0, n); -1 (unseen / unknown) is dark grey."""
    pal = np.concatenate([palette(max(n, 1)), UNSEEN_RGB[None]])
    idx = np.where((labels >= 0) & (labels < n), labels, len(pal) - 1)
    return pal[idx]


def heat_colors(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> a perceptual blue-to-red ramp (turbo-like); NaN -> grey."""
    stops = np.array([[48, 18, 59], [50, 130, 246], [26, 228, 182], [164, 252, 60],
                      [251, 185, 56], [228, 70, 10], [122, 4, 3]], np.float32)
    v = np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * (len(stops) - 1)
    i = np.minimum(v.astype(np.int64), len(stops) - 2)
    f = (v - i)[:, None]
    out = (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)
    out[np.isnan(values)] = UNSEEN_RGB
    return out


def save_legend(path, names: list[str], colors: np.ndarray | None = None, title: str | None = None, *,
                counts=None, unseen: int | None = None) -> None:
    """A small PNG legend: one colour swatch and name per class, with its point count when
    ``counts`` is given, and an "unseen" swatch (UNSEEN_RGB) with ``unseen`` points."""
    from PIL import Image, ImageDraw

    colors = palette(len(names)) if colors is None else colors
    rows = list(zip(names, colors, [None] * len(names) if counts is None else [int(k) for k in counts]))
    if unseen is not None:
        rows.append(("unseen", UNSEEN_RGB, int(unseen)))
    texts = [n if k is None else f"{n}  {k:,}" for n, _, k in rows]
    row, pad = 22, 8
    width = 40 + 8 * max([len(t) for t in texts] + [len(title or "")] + [10])
    height = pad * 2 + row * (len(rows) + (1 if title else 0))
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    y = pad
    if title:
        d.text((pad, y + 4), title, fill=(0, 0, 0))
        y += row
    for text, (_, c, _) in zip(texts, rows):
        d.rectangle([pad, y + 3, pad + 16, y + 19], fill=tuple(int(x) for x in c), outline=(0, 0, 0))
        d.text((pad + 24, y + 6), text, fill=(0, 0, 0))
        y += row
    img.save(path)
