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
    import warnings
    from .io import describe, format_description
    with warnings.catch_warnings(record=True) as caught:  # e.g. frames skipped for invalid poses
        warnings.simplefilter("always")
        desc = describe(args.path, layout=args.layout)
    for w in caught:
        print(f"pc-ovseg info: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    print_json(desc) if args.json else print(format_description(desc))
    return 0


# --- render (views) --------------------------------------------------------------------------
def _render_args(p):
    p.add_argument("input", help="a cloud or mesh (any format the readers accept) or an RGB-D folder / scene.json")
    p.add_argument("--out", required=True, help="output folder for the views and contact_sheet.png")
    p.add_argument("--max-views", type=int, default=None, help="view budget (planned views or selected frames)")
    p.add_argument("--attribute", help="render this per-point field (e.g. label) instead of colour")
    p.add_argument("--kind", default="auto", choices=["auto", "indoor", "aerial", "street", "object"],
                   help="camera plan for clouds and meshes (default: detected from the scene)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--cloud", help="point cloud for posed frames (default: built from the frames' depth)")
    p.add_argument("--cloud-frames", type=int, default=None,
                   help="build the cloud of an RGB-D folder from at most this many frames (default: all)")
    p.add_argument("--layout", help="raw .bin/.npy column layout, e.g. xyz, xyzrgb, xyzi")
    p.add_argument("--depth-format", choices=["png", "npy"], default="png",
                   help="depth as 16-bit PNG in millimetres (default) or float32 .npy metres")
    p.add_argument("--json", action="store_true", help="print one JSON object (views, coverage, files)")


@command("render", "render views (image, depth, camera, index map) of a cloud, mesh or RGB-D frames")
@arguments(_render_args)
def cmd_render(args) -> int:
    import numpy as np
    from .data import FrameSequence, Mesh
    from .errors import InputError
    from .io import read, read_cloud
    from .views import cloud_from_frames, contact_sheet, make_views, save_view
    src = read(args.input, layout=args.layout)
    if args.width <= 0 or args.height <= 0:
        raise InputError(None, f"--width/--height must be positive, got {args.width}x{args.height}")
    if isinstance(src, FrameSequence):
        if args.attribute:
            raise InputError(args.input, "--attribute applies to clouds and meshes, not to posed frames")
        if args.cloud:
            cloud = read_cloud(args.cloud, layout=args.layout)
        elif src.has_depth:
            cloud = cloud_from_frames(src, max_frames=args.cloud_frames)
        else:
            raise InputError(args.input, "frames have no depth: pass the scene's point cloud with --cloud")
        views = make_views(src, cloud=cloud, max_views=args.max_views)
        n_points = len(cloud)
    else:
        if args.attribute and args.attribute not in src.fields:
            raise InputError(args.input, f"no per-point field {args.attribute!r} (has: {', '.join(src.fields) or 'none'})")
        views = make_views(src, max_views=args.max_views, kind=args.kind, width=args.width, height=args.height,
                           attribute=args.attribute)
        n_points = len(src.vertices if isinstance(src, Mesh) else src.xyz)
    os.makedirs(args.out, exist_ok=True)
    seen = np.zeros(n_points, bool)
    files, thumbs = [], []
    for k, view in enumerate(views):
        files.append(save_view(view, args.out, f"view{k:03d}", depth_format=args.depth_format))
        seen[view.point_ids] = True
        view.depth = view.index = None  # keep only what the contact sheet needs
        thumbs.append(view)
    if not thumbs:
        raise InputError(args.input, "no views were produced (is --max-views 0?)")
    sheet = contact_sheet(thumbs, os.path.join(args.out, "contact_sheet.png"))
    result = {"views": len(thumbs), "coverage": float(seen.mean()) if n_points else 0.0, "points": n_points,
              "out": args.out, "contact_sheet": str(sheet), "files": files}
    if args.json:
        print_json(result)
    else:
        print(f"{len(thumbs)} views of {n_points:,} points, coverage {result['coverage']:.2%} -> {args.out}")
    return 0




# --- fuse / query / eval / run (fusion, query, eval, pipeline) -------------------------------


# --- distill / predict (backbone) ------------------------------------------------------------


# --- view (viewer) ---------------------------------------------------------------------------


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
