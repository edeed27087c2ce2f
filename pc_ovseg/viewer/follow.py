"""``pc-ovseg view DIR --follow``: keep showing the newest snapshot of a growing map.

A thread polls the map file (``pc-ovseg map`` rewrites it atomically, so a read never sees a
torn file); when it changed, the new snapshot becomes the server's scene (prepared first, so
queries stay fast) and the info's ``version`` steps up, which the page polls and reloads on.
"""
from __future__ import annotations

import os
import threading


def map_file(path) -> str:
    """A map folder's ``map.npz`` (``pc-ovseg map --out DIR``), or the path itself."""
    from ..mapping.stream import MAP_FILE
    p = os.fspath(path)
    if os.path.isdir(p) and os.path.isfile(os.path.join(p, MAP_FILE)):
        return os.path.join(p, MAP_FILE)
    return p


def follow(server, path: str, make_scene, *, interval: float = 2.0) -> threading.Thread:
    """Swap ``server.scene`` for ``make_scene()`` whenever ``path`` changes; returns the thread."""
    server.follow, server.version = True, 0

    def stamp():
        try:
            st = os.stat(path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None
    seen = stamp()

    def loop():
        nonlocal seen
        while not getattr(server, "_BaseServer__shutdown_request", False):
            threading.Event().wait(interval)
            now = stamp()
            if now is None or now == seen:
                continue
            try:
                scene = make_scene()
                scene.prepare()
            except Exception:  # noqa: BLE001 - a snapshot being replaced: try again next time
                continue
            seen = now
            with server.query_lock:
                server.scene = scene
                server.version += 1
    t = threading.Thread(target=loop, name="pc_ovseg-view-follow", daemon=True)
    t.start()
    return t
