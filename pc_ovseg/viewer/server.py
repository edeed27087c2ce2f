"""A small local HTTP server for the viewer page (stdlib only, 127.0.0.1 by default).

Arrays travel as raw little-endian binary (positions float32, colours/heat/labels uint8), never
as JSON numbers: a 2M-point cloud is 30 MB of float32 but about 60 MB of JSON text to parse.
Client input is JSON with hard length and depth limits and is only ever used as query text;
a request that could mean two things (two Host headers, an absolute URL) is refused, and a client
that stalls or hangs up only ends its own connection.
"""
from __future__ import annotations

import ipaddress
import json
import mimetypes
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..colors import UNSEEN_RGB
from ..errors import PcOvsegError
from .scene import NO_LABEL, ViewerScene

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024           # bytes of a request body
MAX_QUERY = 200                # characters of one query
MAX_VOCAB = 64                 # names in a vocabulary (labels fit in uint8 with NO_LABEL to spare)
MAX_NAME = 64                  # characters of one vocabulary name
MAX_JSON_DEPTH = 32            # nesting of a request body; ours use 2, json.loads recurses per level
TIMEOUT = 10.0                 # seconds a connection may stall (idle keep-alive, half-sent request)
WRITE_CHUNK = 1 << 20          # bytes per socket write: the timeout bounds a stall, not a transfer
assert MAX_VOCAB < NO_LABEL
#: The page loads only its own files and talks only to this server (inline styles: legend swatches).
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


class BadRequest(ValueError):
    """Client input we refuse; answered with 400 and the message."""


def _text(value, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    text = " ".join(value.split())
    if not text:
        raise BadRequest(f"{what} is empty")
    if len(value) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters")
    if any(ord(ch) < 32 for ch in text):
        raise BadRequest(f"{what} contains control characters")
    return text


def json_depth_ok(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``[``/``{`` nest at most ``limit`` deep outside strings: checked before parsing,
    since ``json.loads`` recurses once per level (16 KB of ``[`` is a RecursionError)."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                return False
        elif byte in b"]}":
            depth -= 1
    return True


def parse_query(body: dict) -> str:
    return _text(body.get("query"), "query", MAX_QUERY)


def parse_vocabulary(body: dict, *, required: bool = True) -> list[str]:
    vocab = body.get("vocabulary")
    if vocab is None and not required:
        return []
    if not isinstance(vocab, list):
        raise BadRequest("vocabulary must be a list of names")
    if not vocab and required:
        raise BadRequest("vocabulary is empty")
    if len(vocab) > MAX_VOCAB:
        raise BadRequest(f"vocabulary has more than {MAX_VOCAB} names")
    names = [_text(v, "vocabulary name", MAX_NAME) for v in vocab]
    if len(set(names)) != len(names):
        raise BadRequest("vocabulary has duplicate names")
    return names


class ViewerServer(ThreadingHTTPServer):
    """Serves one ``ViewerScene``; queries are serialised (one engine, bounded memory)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, scene: ViewerScene, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True):
        self.scene = scene
        self.quiet = quiet
        self.query_lock = threading.Lock()
        self.static_files = {f"/static/{p.relative_to(STATIC_DIR).as_posix()}": p
                             for p in STATIC_DIR.rglob("*") if p.is_file()}
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def handle_error(self, request, client_address):
        """A client that hung up or stalled is no bug: no traceback for it."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def info(self) -> dict:
        s = self.scene
        cov = s.coverage()
        up, up_source = s.up_axis
        legend = None if s.queryable else s.field_legend
        return {
            "title": s.title, "n_points": s.n_points, "n_display": s.n_display,
            "centre": (s.centre + s.cloud.origin).tolist(), "radius": max(s.radius, 1e-6),
            "up": [round(float(x), 4) for x in up], "up_source": up_source,
            "has_rgb": s.cloud.rgb is not None, "queryable": s.queryable,
            "encoder": s.features.encoder if s.features is not None else None,
            "vocabulary": s.default_vocabulary(),
            "coverage_max": int(cov.max()) if cov is not None and len(cov) else None,
            "coverage": None if s.features is None else round(s.features.coverage, 4),
            "field_labels": None if legend is None else legend["names"],
            "field_label_colors": None if legend is None else legend["colors"],
            "field_label_counts": None if legend is None else legend["counts"],
            "field_no_label": None if legend is None or legend["none"] is None else
            {"name": legend["none"], "count": legend["none_count"]},
            "unseen_rgb": UNSEEN_RGB.tolist(),
            "message": s.message,
            "limits": {"query": MAX_QUERY, "vocabulary": MAX_VOCAB, "name": MAX_NAME},
            "instances": s.instance_info(),
            "follow": bool(getattr(self, "follow", False)), "version": int(getattr(self, "version", 0)),
        }


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    #: per socket operation: an idle or half-open connection (and its thread) is dropped after it
    timeout = TIMEOUT

    def log_message(self, fmt, *args):  # noqa: D102 - requests are logged only when asked
        if not self.server.quiet:
            super().log_message(fmt, *args)

    def log_error(self, fmt, *args):  # noqa: D102 - errors always are; an idle connection timing out is none
        if not any(isinstance(a, TimeoutError) for a in args):
            super().log_message(fmt, *args)

    # -- responses -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            view = memoryview(body)
            for i in range(0, len(view), WRITE_CHUNK):
                self.wfile.write(view[i:i + WRITE_CHUNK])

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _binary(self, arr: np.ndarray, headers: dict | None = None) -> None:
        data = np.ascontiguousarray(arr)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        self._send(200, data.tobytes(), "application/octet-stream", headers)

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _refused(self) -> bool:
        """Answer, and close, a request that is ambiguous or not addressed to us; True if so."""
        if len(self.headers.get_all("Host", [])) > 1:
            status, message = 400, "more than one Host header"
        elif not self.path.startswith("/"):  # absolute-form names a host the Host check never sees
            status, message = 400, "the request target must be a path, not an absolute URL"
        elif not self._host_ok():
            status, message = 403, "requests must be addressed to a loopback host"
        else:
            return False
        self.close_connection = True  # a body, if any, was never read
        self._error(status, message)
        return True

    def _host_ok(self) -> bool:
        """Only requests addressed to a loopback name: a web page that rebinds its own DNS name
        to 127.0.0.1 (DNS rebinding) sends its own Host header and is refused."""
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    # -- GET -------------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        if self._refused():
            return
        path = urlsplit(self.path).path
        s = self.server.scene
        if path in ("/", "/index.html"):
            return self._file(STATIC_DIR / "index.html")
        if path in self.server.static_files:  # a fixed table: no path from the client reaches disk
            return self._file(self.server.static_files[path])
        if path == "/api/info":
            return self._json(self.server.info())
        if path == "/api/positions":
            return self._binary(s.positions())
        if path == "/api/display_ids":
            return self._binary(s.display_ids.astype(np.uint32))
        if path == "/api/colors":
            rgb = s.colors()
            return self._binary(rgb) if rgb is not None else self._error(404, "the cloud has no colour")
        if path == "/api/coverage":
            cov = s.coverage()
            return self._binary(cov) if cov is not None else self._error(404, "a plain cloud has no coverage")
        if path == "/api/instances":
            ids = s.instance_ids()
            return self._binary(ids) if ids is not None else self._error(404, "no instances (pc-ovseg instances)")
        if path == "/api/field_labels":
            fl = s.field_labels()
            return self._binary(fl) if fl is not None else self._error(404, "the cloud has no label field")
        return self._error(404, "not found")

    do_HEAD = do_GET

    def _file(self, path: Path) -> None:
        ctype = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                 ".html": "text/html; charset=utf-8"}.get(path.suffix) \
            or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Security-Policy": CSP} if path.suffix == ".html" else None
        self._send(200, path.read_bytes(), ctype, headers)

    # -- POST ------------------------------------------------------------------------------------
    def do_POST(self):  # noqa: N802
        if self._refused():
            return
        path = urlsplit(self.path).path
        routes = {"/api/heatmap": self._heatmap, "/api/labels": self._labels, "/api/pick": self._pick}
        route = routes.get(path)
        if route is None:
            self.close_connection = True  # its body was never read
            return self._error(404, "not found")
        try:
            body = self._read_json()
            if path != "/api/pick" and not self.server.scene.queryable:
                return self._error(409, self.server.scene.message)
            self.started = time.perf_counter()  # X-Query-Ms counts a wait for the lock too
            with self.server.query_lock:
                return route(body)
        except BadRequest as err:
            self.close_connection = True  # the body may be unread
            return self._error(400, str(err))
        except PcOvsegError as err:  # e.g. the text encoder's weights went missing
            return self._error(422, str(err))
        except (ConnectionError, TimeoutError):  # the client hung up or stalled: nobody to answer
            raise
        except Exception as err:  # a bug: answer it, keep serving; the traceback goes to the log
            self.log_error("%s %s failed: %r", self.command, path, err)
            return self._error(500, f"internal error: {type(err).__name__}: {' '.join(str(err).split())}")

    def _read_json(self) -> dict:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype != "application/json":
            raise BadRequest("body must be application/json")
        if "Transfer-Encoding" in self.headers:
            raise BadRequest("Transfer-Encoding is not supported; send Content-Length")
        lengths = self.headers.get_all("Content-Length", [])
        if len(lengths) > 1:
            raise BadRequest("more than one Content-Length header")
        value = lengths[0].strip() if lengths else ""
        if not (value.isascii() and value.isdigit()):  # int() would take "+5" or "1_0"
            raise BadRequest("Content-Length is required, as a decimal number")
        length = int(value)
        if length > MAX_BODY:
            self.close_connection = True  # do not read an oversized body
            raise BadRequest(f"body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        if not json_depth_ok(raw):
            raise BadRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _query_ms(self) -> str:
        """Milliseconds this request has spent on the server since its body was read."""
        return f"{(time.perf_counter() - self.started) * 1e3:.1f}"

    def _heatmap(self, body: dict) -> None:
        text = parse_query(body)
        heat = self.server.scene.heatmap(text)
        self._binary(heat, {"X-Query-Ms": self._query_ms(), "X-Query": _ascii_header(text)})

    def _labels(self, body: dict) -> None:
        vocab = parse_vocabulary(body)
        scene = self.server.scene
        labels, counts, unseen = scene.labels(vocab)
        colors = ";".join(",".join(map(str, c)) for c in scene.label_colors(vocab))
        self._binary(labels, {"X-Query-Ms": self._query_ms(), "X-Label-Counts": ",".join(map(str, counts)),
                              "X-Label-Colors": colors, "X-Unseen-Count": str(unseen)})

    def _pick(self, body: dict) -> None:
        index = body.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.server.scene.n_display:
            raise BadRequest("index must be a displayed point's index")
        vocab = parse_vocabulary(body, required=False) or self.server.scene.default_vocabulary()
        self._json(self.server.scene.describe_point(index, vocab))


def _ascii_header(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode()[:MAX_QUERY * 4]


def start_server(scene: ViewerScene, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> ViewerServer:
    """Bind (``port=0``: a free port) and serve in a daemon thread; ``server.shutdown()`` stops it."""
    server = ViewerServer(scene, host, port, quiet=quiet)
    threading.Thread(target=server.serve_forever, name="pc-ovseg-viewer", daemon=True).start()
    return server
