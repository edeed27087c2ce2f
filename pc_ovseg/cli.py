"""pc-ovseg: a thin command line over the Python API.

Each subcommand is one ``cmd_*`` function registered in COMMANDS; it parses nothing itself
beyond its arguments and calls the stage modules. Errors a user can fix print as one line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import PcOvsegError

COMMANDS: dict[str, tuple] = {}  # name -> (add_arguments, run, help)


def command(name: str, help: str):
    """Register ``fn(args)`` as a subcommand; its ``.arguments(parser)`` adds options."""
    def deco(fn):
        COMMANDS[name] = (getattr(fn, "arguments", lambda p: None), fn, help)
        return fn
    return deco


def arguments(fn_args):
    def deco(fn):
        fn.arguments = fn_args
        return fn
    return deco


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=None, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --- info (io) -----------------------------------------------------------------------------
def _info_args(p):
    p.add_argument("path", help="a cloud, mesh or RGB-D folder/manifest")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--layout", help="raw .bin/.npy column layout, e.g. xyz, xyzrgb, xyzi")


@command("info", "describe what a file or RGB-D folder holds")
@arguments(_info_args)
def cmd_info(args) -> int:
    from .io import describe, format_description
    desc = describe(args.path, layout=args.layout)
    print_json(desc) if args.json else print(format_description(desc))
    return 0


# --- render (views) --------------------------------------------------------------------------


# --- fuse / query / eval / run (fusion, query, eval, pipeline) -------------------------------


# --- distill / predict (backbone) ------------------------------------------------------------


# --- view (viewer) ---------------------------------------------------------------------------
def _view_args(p):
    p.add_argument("result", help="a FeatureCloud .npz (fused or distilled) or a plain cloud file")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--screenshot", metavar="PATH", help="save the page as PNG in headless Chromium, then exit")
    p.add_argument("--query", help="start with this query's heatmap (also for --screenshot)")
    p.add_argument("--vocabulary", help="comma-separated class names for the label view")
    p.add_argument("--mode", choices=["rgb", "label", "heatmap", "coverage"], help="starting colour mode")
    p.add_argument("--point-size", type=float, help="starting point size in pixels")
    p.add_argument("--max-display-points", type=int, default=2_000_000,
                   help="subsample larger clouds for display; queries still use every point")
    p.add_argument("--layout", help="raw .bin/.npy column layout of a plain cloud, e.g. xyzrgb")


@command("view", "show a result or cloud in a local web viewer and query it")
@arguments(_view_args)
def cmd_view(args) -> int:
    import ipaddress
    from urllib.parse import urlencode

    from .errors import InputError
    from .viewer import ViewerScene, screenshot, start_server

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(None, f"--host {args.host}: the viewer serves on loopback addresses only")
    if args.max_display_points < 1:
        raise InputError(None, "--max-display-points must be at least 1")
    scene = ViewerScene.from_path(args.result, layout=args.layout, max_display_points=args.max_display_points)
    scene.prepare()
    try:
        server = start_server(scene, args.host, args.port, quiet=not os.environ.get("PC_OVSEG_DEBUG"))
    except OSError as err:
        raise InputError(None, f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    params = {k: v for k, v in (("q", args.query), ("vocab", args.vocabulary), ("mode", args.mode),
                                ("size", args.point_size)) if v is not None}
    url = server.url + (f"?{urlencode(params)}" if params else "")
    try:
        if args.screenshot:
            out = screenshot(url, args.screenshot)
            print(f"saved {out}")
            return 0
        print(f"pc-ovseg view: {scene.n_points:,} points at {url} (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            import webbrowser
            webbrowser.open(url)
        import threading
        threading.Event().wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="pc-ovseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pc_ovseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, run, _ = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except PcOvsegError as err:
        print(f"pc-ovseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pc-ovseg {args.command}: interrupted; finished views are cached, rerun to resume",
              file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("PC_OVSEG_DEBUG"):
            raise
        print(f"pc-ovseg {args.command}: internal error: {type(err).__name__}: {' '.join(str(err).split())}"
              " (set PC_OVSEG_DEBUG=1 for a traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
