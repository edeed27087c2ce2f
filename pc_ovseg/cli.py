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
