"""pc-ovseg: a thin command line over the Python API.

Each subcommand is one ``cmd_*`` function registered in COMMANDS; it parses nothing itself
beyond its arguments and calls the stage modules. Errors a user can fix print as one line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import InputError, PcOvsegError

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
def _vocabulary(arg: str) -> dict:
    """--labels: a label-set name (data/labelsets), a JSON/text file, or comma-separated names.

    Returns the query texts (each class's first prompt), their class ids, and how LAS codes them.
    """
    from .eval import parse_classes
    ls = parse_classes(arg)
    return {"vocabulary": list(ls.prompt_names()), "class_ids": list(ls.ids),
            "las_codes": "asprs" if ls.name == "asprs" else "shift"}


def _scene_args(p):
    p.add_argument("input", help="cloud, mesh, organised PCD or RGB-D folder/manifest")
    p.add_argument("--out", required=True, help="output folder (its cache/ makes reruns resume)")
    p.add_argument("--max-views", type=int, default=None, help="view budget (frames or rendered views)")
    p.add_argument("--cloud", help="for RGB-D input: label this cloud instead of one built from depth")
    p.add_argument("--layout", help="column layout of raw .bin/.npy input, e.g. xyzrgb")
    p.add_argument("--kind", default="auto", choices=["auto", "indoor", "aerial", "street", "object"],
                   help="camera plan for bare clouds and meshes")
    p.add_argument("--min-views", type=int, default=None,
                   help="views the camera plan aims for per point (default 8; fewer = faster 2D stage, "
                        "less robust to 2D errors; 1 = coverage only)")
    p.add_argument("--zoom", type=int, default=2,
                   help="organised clouds (one frame): also use 3x3 overlapping crops enlarged this much (1 = off)")
    p.add_argument("--voxel-size", type=float, default=0.02, help="for RGB-D input: cloud voxel size (m)")
    p.add_argument("--no-progress", action="store_true")
    from .encoders import add_encoder_args
    add_encoder_args(p)


def _run_args(p):
    _scene_args(p)
    p.add_argument("--labels", required=True,
                   help="vocabulary: label-set name (scannet20, ...), file, or 'wall,floor,chair,other'")
    p.add_argument("--distilled", metavar="CKPT", help="also predict with this distilled 3D model (`pc-ovseg "
                   "distill`) and label the 2D-3D ensemble")
    p.add_argument("--tta", type=int, default=1, help="test-time augmentations for --distilled")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _scene_kw(args) -> dict:
    return dict(max_views=args.max_views, cloud_path=args.cloud, layout=args.layout, kind=args.kind,
                min_views=args.min_views, zoom=args.zoom, voxel_size=args.voxel_size, progress=not args.no_progress)


@command("run", "views -> features -> fusion -> labels in one go (resumes if interrupted)")
@arguments(_run_args)
def cmd_run(args) -> int:
    from .pipeline import run
    voc = _vocabulary(args.labels)
    summary = run(args.input, args.out, voc.pop("vocabulary"), encoder_args=args, distilled=args.distilled,
                  tta=args.tta, **voc, **_scene_kw(args))
    if args.json:
        print_json(summary)
    else:
        print(f"{summary['points']} points, {summary['views']} views "
              f"({summary['views_cached']} from cache), coverage {summary['coverage']:.3f}, "
              f"{summary['seconds']:.1f} s")
        for f in summary["files"]:
            print(f"  wrote {f}")
    return 0


def _fuse_args(p):
    _scene_args(p)
    p.add_argument("--json", action="store_true")


@command("fuse", "fuse 2D features of every view onto the points (writes OUT/fused.npz)")
@arguments(_fuse_args)
def cmd_fuse(args) -> int:
    from pathlib import Path

    from .encoders import view_encoder_from_args
    from .pipeline import fuse_scene, load_scene
    kw = _scene_kw(args)
    progress = kw.pop("progress")
    scene = load_scene(args.input, plan_cache=Path(args.out) / "cache", **kw)
    enc = view_encoder_from_args(args, cache_dir=str(Path(args.out) / "cache" / "encoder"))
    fc, stats = fuse_scene(scene, enc, Path(args.out) / "cache", progress=progress,
                           settings={"input": args.input, **kw})
    fc.save(Path(args.out) / "fused.npz")
    summary = {"points": len(fc.cloud), "views": stats.views, "coverage": fc.coverage,
               "fused": str(Path(args.out) / "fused.npz"), "seconds": round(stats.seconds, 3)}
    print_json(summary) if args.json else print(f"wrote {summary['fused']} (coverage {fc.coverage:.3f})")
    return 0


def _query_args(p):
    p.add_argument("features", help="a fused or predicted feature file (.npz)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--labels", help="vocabulary -> per-point labels")
    g.add_argument("--text", help="free-text query -> heatmap (and objects with --threshold)")
    p.add_argument("--threshold", type=float, default=0.5, help="heatmap level that selects points")
    p.add_argument("--min-points", type=int, default=20, help="smallest object kept")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true")


@command("query", "labels for a vocabulary, or a heatmap and objects for one text query")
@arguments(_query_args)
def cmd_query(args) -> int:
    from pathlib import Path

    from . import io
    from .colors import heat_colors
    from .data import FeatureCloud
    from .pipeline import export_labels
    from .query import QueryEngine
    fc = FeatureCloud.load(args.features)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.labels:
        voc = _vocabulary(args.labels)
        if fc.class_names:  # label-space features: a class is queried by its own name
            from .eval import parse_classes
            voc["vocabulary"] = list(parse_classes(args.labels).names)
        summary = export_labels(out, fc, voc.pop("vocabulary"), **voc)
    else:
        if not args.text.strip() or len(args.text) > 500:
            raise InputError(None, "--text must be 1-500 characters")
        eng = QueryEngine(fc)
        heat = eng.heatmap(args.text)
        objs = eng.objects(args.text, threshold=args.threshold, min_points=args.min_points)
        stem = "".join(c if c.isalnum() else "_" for c in args.text)[:40]
        for ext in ("ply", "npz"):
            io.write(out / f"heatmap_{stem}.{ext}", fc.cloud, scores=heat, colors=heat_colors(heat),
                     labels=_object_labels(len(heat), objs))
        summary = {"query": args.text, "points_selected": int((heat >= args.threshold).sum()),
                   "objects": [o.to_dict() for o in objs],
                   "files": [str(out / f"heatmap_{stem}.ply"), str(out / f"heatmap_{stem}.npz")]}
        (out / f"objects_{stem}.json").write_text(json.dumps(summary, indent=2))
    print_json(summary) if args.json else print("\n".join(f"wrote {f}" for f in summary["files"]))
    return 0


def _object_labels(n: int, objs):
    import numpy as np
    lab = np.full(n, -1, np.int32)
    for k, o in enumerate(objs):
        lab[o.point_ids] = k
    return lab



def _eval_args(p):
    p.add_argument("pred", help="predictions: a cloud with a label field (PLY 'label', LAS 'classification'), "
                                "a label file (.npy, .label, .txt), or a FeatureCloud .npz (queried with --labels)")
    p.add_argument("--gt", required=True, help="ground truth: a cloud with a label field or a label file")
    p.add_argument("--classes", help="GT label ids: a label set (pc_ovseg.eval.list_labelsets(), e.g. scannet20, "
                                     "semantickitti19, asprs), a JSON/.txt file, or comma-separated names by id "
                                     "('ignore' = not evaluated)")
    p.add_argument("--labels", help="the vocabulary that made PRED (same forms): a FeatureCloud PRED is queried with "
                                    "it; a PRED file then holds positions in it, as 'pc-ovseg query/run --labels' "
                                    "write them. Matched to --classes by class name")
    p.add_argument("--pred-field", help="per-point field of PRED holding labels (default: label, classification, ...)")
    p.add_argument("--gt-field", help="per-point field of GT holding labels (default: label, classification, ...)")
    p.add_argument("--ignore", default="", help="more label ids not to evaluate, comma-separated, e.g. 0,255")
    p.add_argument("--remap-gt", action="store_true",
                   help="GT holds raw dataset ids: map them through the label set (NYU40 -> ScanNet-20, "
                        "SemanticKITTI .label -> 19)")
    p.add_argument("--remap-pred", action="store_true", help="the same for PRED")
    p.add_argument("--json", action="store_true", help="print one JSON object (miou, macc, coverage, per_class, ...)")
    p.add_argument("--chart", metavar="PNG", help="write a per-class IoU bar chart")
    p.add_argument("--all", action="store_true", help="list classes absent from GT and predictions too")


@command("eval", "score per-point predictions against ground truth: mIoU, mAcc, coverage, confusion")
@arguments(_eval_args)
def cmd_eval(args) -> int:
    from . import eval as ev
    from .errors import InputError
    try:
        ignore = [int(t) for t in args.ignore.replace(" ", "").split(",") if t]
    except ValueError:
        raise InputError(None, f"--ignore wants comma-separated integer ids, got {args.ignore!r}") from None
    result, classes = ev.evaluate_files(args.pred, args.gt, args.classes, labels=args.labels,
                                        pred_field=args.pred_field, gt_field=args.gt_field, ignore_ids=ignore,
                                        remap_gt=args.remap_gt, remap_pred=args.remap_pred)
    if args.chart:
        ev.save_bar_chart(result, args.chart, title=f"{os.path.basename(args.pred)} vs "
                                                     f"{os.path.basename(args.gt)} ({classes.title or classes.name})")
    if args.json:
        print_json({**result.to_json(), "labelset": classes.name, "pred": args.pred, "gt": args.gt,
                    **({"chart": args.chart} if args.chart else {})})
    else:
        print(ev.format_table(result, all_classes=args.all))
    return 0


# --- distill / predict (backbone) ------------------------------------------------------------
def _distill_args(p):
    p.add_argument("fused", nargs="+", help="fused feature files (.npz from `pc-ovseg fuse`/`run`)")
    p.add_argument("--out", required=True, help="checkpoint to write (rewritten every epoch; rerun to resume)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--voxel-size", type=float, default=0.02, help="metres: 0.02 indoor, 0.05 outdoor")
    p.add_argument("--color", action="store_true", help="use point colour as input (default: geometry only)")
    p.add_argument("--inputs", help="input features instead: ones, height, color, combined with '+'")
    p.add_argument("--arch", default="MinkUNet18A", help="MinkUNet14A, MinkUNet18A (OpenScene), MinkUNet18B, ...")
    p.add_argument("--planes", help="override the 8 layer widths, e.g. 16,32,64,128,64,64,48,48 (smaller = faster)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=2, help="scenes per step (per process under torchrun)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    p.add_argument("--json", action="store_true")


@command("distill", "train the 3D U-Net to predict fused features from geometry (torchrun for multi-GPU)")
@arguments(_distill_args)
def cmd_distill(args) -> int:
    from .backbone.train import distill
    from .errors import InputError, check_input_path
    for f in args.fused:
        check_input_path(f)
    overrides = {}
    if args.planes:
        try:
            planes = tuple(int(v) for v in args.planes.split(","))
        except ValueError:
            planes = ()
        if len(planes) != 8 or min(planes) < 1:
            raise InputError(None, f"--planes wants 8 positive comma-separated widths, got {args.planes!r}")
        overrides = {"planes": planes, "init_dim": planes[0]}
    r = distill(args.fused, args.out, epochs=args.epochs, voxel_size=args.voxel_size, use_color=args.color,
                inputs=args.inputs, arch=args.arch, lr=args.lr, batch_size=args.batch_size,
                max_minutes=args.max_minutes, device=args.device, resume=not args.no_resume,
                model_overrides=overrides)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary = {"checkpoint": r.checkpoint, "epochs": r.epochs, "steps": r.steps, "loss": r.last_loss,
               "seconds": round(r.seconds, 2), "stopped_early": r.stopped_early}
    print_json(summary) if args.json else print(
        f"wrote {r.checkpoint} (epoch {r.epochs}, loss {r.last_loss:.4f}, {r.seconds:.0f} s"
        f"{', time budget reached' if r.stopped_early else ''})")
    return 0


def _predict_args(p):
    p.add_argument("checkpoint", help="a `pc-ovseg distill` checkpoint or an OpenScene MinkUNet18A checkpoint")
    p.add_argument("input", help="any cloud or mesh pc_ovseg reads (or a feature .npz: its cloud is used)")
    p.add_argument("--out", required=True, help="feature file to write (.npz, read by query/eval/view)")
    p.add_argument("--tta", type=int, default=1, help="average over N voxelisations (rotated, shifted)")
    p.add_argument("--voxel-size", type=float, default=None, help="override the checkpoint's voxel size")
    p.add_argument("--layout", help="column layout of raw .bin/.npy input, e.g. xyzrgb")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")


@command("predict", "features for every point of a cloud from the distilled 3D model (no images)")
@arguments(_predict_args)
def cmd_predict(args) -> int:
    import time

    from .backbone.predict import predict
    from .errors import InputError, check_input_path
    check_input_path(args.input)
    if args.tta < 1:
        raise InputError(None, f"--tta must be >= 1, got {args.tta}")
    t0 = time.perf_counter()
    if args.input.endswith(".npz") and _is_feature_file(args.input):
        from .data import FeatureCloud
        cloud = FeatureCloud.load(args.input).cloud
    else:
        from .io import read_cloud
        cloud = read_cloud(args.input, layout=args.layout)
    fc = predict(args.checkpoint, cloud, tta=args.tta, device=args.device, voxel_size=args.voxel_size)
    fc.save(args.out)
    summary = {"features": args.out, "points": len(fc.cloud), "dim": int(fc.features.shape[1]), "tta": args.tta,
               "seconds": round(time.perf_counter() - t0, 2)}
    print_json(summary) if args.json else print(f"wrote {args.out} ({summary['points']} points)")
    return 0


def _is_feature_file(path: str) -> bool:
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as z:
            return "features" in z.files and "header" in z.files
    except (OSError, ValueError):
        return False




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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; with ``only``, just that one gets its options (imports stay lazy, so
    `pc-ovseg info` never loads torch)."""
    from . import __version__
    parser = argparse.ArgumentParser(prog="pc-ovseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pc_ovseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or name == only:
            add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("PC_OVSEG_DEBUG"):
        # library warnings (torch, open_clip) are for developers; users get one-line errors
        import logging
        import warnings
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
    argv = sys.argv[1:] if argv is None else list(argv)
    only = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only if only in COMMANDS else None).parse_args(argv)
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
