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

from .registry import Registry

COMMANDS = Registry()  # name -> (add_arguments, run, help)


def command(name: str, help: str):
    """Register ``fn(args)`` as a subcommand; its ``.arguments(parser)`` adds options."""
    def deco(fn):
        COMMANDS.register(name)((getattr(fn, "arguments", lambda p: None), fn, help))
        return fn
    return deco


def arguments(fn_args):
    def deco(fn):
        fn.arguments = fn_args
        return fn
    return deco


def print_json(obj) -> None:
    from .store import json_default
    json.dump(obj, sys.stdout, indent=None, default=json_default)
    sys.stdout.write("\n")



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


# --- typed options from the config dataclasses ------------------------------------------------
def checked(check):
    """An argparse ``type`` that parses and range-checks (config.Num): bad values fail at parse time."""
    def parse(text: str):
        try:
            v = check.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        why = check.problem(v)
        if why:
            raise argparse.ArgumentTypeError(why)
        return v
    return parse


def config_options(p, section: str, cls, *, skip: tuple = (), title: str | None = None) -> None:
    """One flag per field of ``cls`` (dest ``section.field``; absent unless given, so a --config
    file's values stand where no flag overrides them)."""
    from dataclasses import fields

    from .config import default_of, flag_name
    g = p.add_argument_group(title or section)
    for f in fields(cls):
        flag = flag_name(f)
        if f.name in skip or f.metadata.get("flag") == "" or "help" not in f.metadata:
            continue
        d = default_of(f)
        kw = dict(dest=f"{section}.{f.name}", default=argparse.SUPPRESS, metavar=f.metadata.get("metavar") or
                  f.name.split("_")[-1].upper(),
                  help=f"{f.metadata['help']} (default: {d})")
        if f.metadata.get("check"):
            kw["type"] = checked(f.metadata["check"])
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
            kw.pop("metavar")
        g.add_argument(flag, **kw)


def run_config(args, sections=("views", "encoder", "output")):
    """The RunConfig of a command: the --config file (or the defaults), then the flags given."""
    from .config import RunConfig
    src = getattr(args, "config", None)
    cfg = RunConfig.load(src) if src else RunConfig()
    d = cfg.to_dict()
    for key, v in vars(args).items():
        sec, dot, name = key.partition(".")
        if dot and sec in sections:
            d[sec][name] = v
    if getattr(args, "no_progress", False):
        d["output"]["progress"] = False
    return RunConfig.from_dict(d, source=src)


# --- render (views) --------------------------------------------------------------------------
def _render_args(p):
    from .config import ViewsConfig
    p.add_argument("input", help="a cloud or mesh (any format the readers accept) or an RGB-D folder / scene.json")
    p.add_argument("--out", required=True, help="output folder for the views and contact_sheet.png")
    p.add_argument("--attribute", help="render this per-point field (e.g. label) instead of colour")
    p.add_argument("--depth-format", choices=["png", "npy"], default="png",
                   help="depth as 16-bit PNG in millimetres (default) or float32 .npy metres")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object (views, coverage, files)")
    config_options(p, "views", ViewsConfig, title="views")


@command("render", "render views (image, depth, camera, index map) of a cloud, mesh or RGB-D frames")
@arguments(_render_args)
def cmd_render(args) -> int:
    import numpy as np
    from .data import FrameSequence
    from .io import read
    from .views import contact_sheet, save_view, scene_cloud, view_jobs
    from .views.make import plan_kind
    cfg = run_config(args, ("views",))
    progress = cfg.output.progress
    src = read(args.input, layout=cfg.views.layout)
    if isinstance(src, FrameSequence):
        if args.attribute:
            raise InputError(args.input, "--attribute applies to clouds and meshes, not to posed frames")
        if not cfg.views.cloud and not src.has_depth:
            raise InputError(args.input, "frames have no depth: pass the scene's point cloud with --cloud")
    elif args.attribute and args.attribute not in src.fields:
        raise InputError(args.input, f"no per-point field {args.attribute!r} (has: {', '.join(src.fields) or 'none'})")
    cloud = scene_cloud(src, cfg.views, progress=progress)
    jobs = view_jobs(src, cloud, cfg.views, attribute=args.attribute, progress=progress)
    if not jobs:
        raise InputError(args.input, "no views were produced")
    from tqdm.auto import tqdm
    seen = np.zeros(len(cloud), bool)
    files, thumbs = [], []
    for k, job in enumerate(tqdm(jobs, desc="render", unit="view", disable=not progress)):
        view = job.make()
        files.append(save_view(view, args.out, f"view{k:03d}", depth_format=args.depth_format))
        seen[view.point_ids] = True
        view.depth = view.index = None  # keep only what the contact sheet needs
        thumbs.append(view)
    sheet = contact_sheet(thumbs, os.path.join(args.out, "contact_sheet.png"))
    kind = plan_kind(src, cfg.views)
    result = {"views": len(thumbs), "coverage": float(seen.mean()) if len(cloud) else 0.0, "points": len(cloud),
              "kind": kind, "out": args.out, "contact_sheet": str(sheet), "files": files}
    if args.json:
        print_json(result)
    else:
        print(f"plan: {kind}{' (detected)' if kind != cfg.views.kind else ''}")
        print(f"{len(thumbs)} views of {len(cloud):,} points, coverage {result['coverage']:.2%} -> {args.out}")
    return 0


# --- fuse / query / eval / run (fusion, query, eval, pipeline) -------------------------------



def _scene_args(p, *, run: bool):
    from .config import EncoderConfig, OutputConfig, ScaleConfig, ViewsConfig
    p.add_argument("input", nargs="?", help="cloud, mesh, organised PCD or RGB-D folder/manifest")
    p.add_argument("--out", help="output folder (its cache/ makes reruns resume)")
    p.add_argument("--config", metavar="FILE", help="run configuration (YAML/JSON, as --dump-config writes); "
                                                    "flags given override it")
    p.add_argument("--dump-config", action="store_true", help="print the configuration these options make, and exit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    config_options(p, "views", ViewsConfig, title="views")
    config_options(p, "encoder", EncoderConfig, title="2D encoders")
    config_options(p, "scale", ScaleConfig, title="tiles (clouds bigger than a tile) and where they run")
    if run:
        config_options(p, "output", OutputConfig, title="labels")
        from .config import InstancesConfig
        if run != "instances":
            p.add_argument("--instances", action="store_true", help="also make 3D instances from the views' 2D masks "
                                                                   "(instances.npz / .ply / .las / .json)")
        config_options(p, "instances", InstancesConfig, title="3D instances")


def _print_tiled(summary) -> None:
    """A tiled run's per-tile table and totals."""
    print(f"plan: {summary['kind']}; {summary['points']} points in {summary['tiles']} tiles of at most "
          f"{summary['budget']} (+{summary['halo']:g} m halo), {summary['tiles_cached']} from an earlier run, "
          f"{summary['tiles_failed']} failed")
    print("  tile     points   core  views coverage      s  peak MB")
    for r in summary["per_tile"]:
        print(f"  {r['tile']} {r['points']:>8} {r['core_points']:>7} {r['views']:>5} {r['coverage']:>8.3f} "
              f"{r['seconds']:>6.1f} {r['peak_rss_mb'] or 0:>8.0f}")
    for n, v in summary["failed"].items():
        print(f"  failed {n}: {v['error']}")
    print(f"{summary['views']} views, coverage {summary['coverage']:.3f}, {summary['seconds']:.1f} s")
    for f in summary.get("merged", []):
        print(f"  wrote {f}")


def _scene_config(args, sections):
    cfg = run_config(args, sections)
    if args.dump_config:
        return cfg, True
    if not args.input or not args.out:
        raise InputError(None, "an INPUT and --out are required (or --dump-config)")
    return cfg, False


@command("run", "views -> features -> fusion -> labels in one go (resumes if interrupted)")
@arguments(lambda p: _scene_args(p, run=True))
def cmd_run(args) -> int:
    from .pipeline import run
    cfg, dump = _scene_config(args, ("views", "encoder", "output", "scale", "instances"))
    if getattr(args, "instances", True):  # `pc-ovseg instances` always, `run` with --instances
        cfg.instances.enabled = True
    if dump:
        print(cfg.dump(), end="")
        return 0
    summary = run(args.input, args.out, cfg)
    if "tiles" in summary:
        print_json(summary) if args.json else _print_tiled(summary)
        return 0 if summary["tiles_done"] else 2
    if args.json:
        print_json(summary)
    else:
        t = summary["timings"]
        print(f"plan: {summary['kind']}{' (detected)' if summary['kind'] != cfg.views.kind else ''}")
        print(f"{summary['points']} points, {summary['views']} views "
              f"({summary['views_cached']} from cache), coverage {summary['coverage']:.3f}, "
              f"{summary['seconds']:.1f} s (views {t['views']:.1f}, 2D {t['2d']:.1f}, fusion {t['fusion']:.1f}, "
              f"labels {t['labels']:.1f})")
        if "instances" in summary:
            print(f"{summary['instances']} instances ({t.get('instances', 0):.1f} s)")
        for f in summary.get("files", []) + summary.get("instance_files", []):
            print(f"  wrote {f}")
    return 0


@command("instances", "3D instances (masks, boxes, scores, one feature each) from the views' 2D masks; resumes as run")
@arguments(lambda p: _scene_args(p, run="instances"))
def cmd_instances(args) -> int:
    return cmd_run(args)


@command("fuse", "fuse 2D features of every view onto the points (writes OUT/fused.npz)")
@arguments(lambda p: _scene_args(p, run=False))
def cmd_fuse(args) -> int:
    from pathlib import Path

    from .pipeline import fuse_scene, load_scene
    from .tiles import run_tiled, tile_budget
    cfg, dump = _scene_config(args, ("views", "encoder", "scale"))
    if dump:
        print(cfg.dump(), end="")
        return 0
    out = Path(args.out)
    budget = tile_budget(args.input, cfg.scale)
    if budget is not None:  # per tile: OUT/tiles/tNNNN/fused.npz (query and view read them through tiles.json)
        summary = run_tiled(args.input, out, cfg, budget=budget)
        print_json(summary) if args.json else _print_tiled(summary)
        return 0 if summary["tiles_done"] else 2
    encoder = cfg.encoder.build()  # weights, device and masks fail before the input is read
    scene = load_scene(args.input, cfg.views, plan_cache=out / "cache", progress=cfg.output.progress)
    fc, stats = fuse_scene(scene, encoder, out / "cache", cfg, progress=cfg.output.progress)
    fc.save(out / "fused.npz")
    summary = {"points": len(fc.cloud), "views": stats.views, "views_cached": stats.cached, "coverage": fc.coverage,
               "kind": scene.kind, "fused": str(out / "fused.npz"), "seconds": round(stats.seconds, 3),
               "timings": {k: round(v, 3) for k, v in stats.timings.items()}}
    plan = f"plan: {scene.kind}{' (detected)' if scene.kind != cfg.views.kind else ''}"
    print_json(summary) if args.json else print(f"{plan}\nwrote {summary['fused']} (coverage {fc.coverage:.3f})")
    return 0


# --- map (mapping) -------------------------------------------------------------------------
def _map_args(p):
    from .config import EncoderConfig, MappingConfig
    p.add_argument("input", help="posed RGB-D frames: a folder or manifest the readers know, or a ROS 1 .bag / "
                                 "ROS 2 bag folder (sqlite3 or MCAP)")
    p.add_argument("--out", required=True, help="output folder: map.npz (a FeatureCloud: query, view, eval and "
                                                "distill read it; rewritten as it grows) and summary.json")
    p.add_argument("--geometry-only", action="store_true", help="no 2D model: positions and colours only")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    config_options(p, "mapping", MappingConfig, title="mapping")
    config_options(p, "encoder", EncoderConfig, title="2D encoders (run on keyframes)")


@command("map", "stream posed RGB-D frames or a ROS bag into a semantic voxel map (OUT/map.npz)")
@arguments(_map_args)
def cmd_map(args) -> int:
    from .config import MappingConfig
    from .mapping import map_input
    cfg = run_config(args, ("encoder",))
    mapping = MappingConfig(**{k.partition(".")[2]: v for k, v in vars(args).items() if k.startswith("mapping.")})
    summary = map_input(args.input, args.out, mapping, cfg.encoder, progress=not args.no_progress,
                        geometry_only=args.geometry_only)
    if args.json:
        print_json(summary)
    else:
        sk = ", ".join(f"{k} {v}" for k, v in summary["skipped"].items() if v)
        print(f"{summary['frames']} frames ({summary['keyframes']} keyframes encoded{', skipped ' + sk if sk else ''})"
              f" -> {summary['voxels']:,} voxels, {summary['bytes_per_voxel']:.0f} B/voxel, update "
              f"{summary['update_ms_median']} ms/frame (median), {summary['seconds']:.1f} s")
        print(f"  wrote {summary['map']}")
    return 0


def _query_args(p):
    p.add_argument("features", help="a fused or predicted feature file (.npz), or a tiled run's tiles.json")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--labels", help="vocabulary -> per-point labels")
    g.add_argument("--text", action="append",
                   help="free-text query -> heatmap (and objects with --threshold); repeat it for several queries")
    g.add_argument("--queries", metavar="FILE",
                   help="a text file of queries, one per line (blank lines and # comments skipped), each as --text")
    from .config import Num
    p.add_argument("--threshold", type=checked(Num(float, 0, 1)), default=0.5, help="heatmap level that selects points")
    p.add_argument("--min-points", type=checked(Num(int, 1, None)), default=20, help="smallest object kept")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["scannet", "semantickitti"],
                   help="with --labels: also write the benchmark's prediction file (ScanNet <scene>.txt of "
                        "NYU40 ids, SemanticKITTI <scene>.label of raw ids); the label set needs raw ids")
    p.add_argument("--scene", help="name of the benchmark file (default: the stem of the features' source)")
    p.add_argument("--instances", nargs="?", const="auto", metavar="FILE",
                   help="answer with 3D instances (`pc-ovseg instances`; default: instances.npz beside FEATURES): "
                        "--text ranks them (points, box, score, supporting views), --labels gives each a class "
                        "and its top 5")
    p.add_argument("--top", type=checked(Num(int, 1, None)), default=10, help="with --instances --text: instances listed")
    p.add_argument("--json", action="store_true")


def _is_tiled(path) -> bool:
    from .tiles import INDEX
    return str(path).endswith(INDEX) or os.path.isfile(os.path.join(str(path), INDEX))


def _query_tiled(args, texts, out) -> int:
    from .labels import vocabulary
    from .tiles import TiledResult
    res = TiledResult(args.features)
    out.mkdir(parents=True, exist_ok=True)
    if args.instances:  # the merged instances of every tile (tiles.merge_instances)
        fc = next((fc for _, fc in res._fused()), None)
        if fc is None:
            raise InputError(args.features, "no tile has finished yet")
        summary = _query_instances(args, fc, texts, out, beside=res.out / "instances.npz")
        print_json(summary) if args.json else print("\n".join(f"wrote {f}" for f in summary["files"]))
        return 0
    if args.format:
        raise InputError(args.features, "--format is written per scene; query a tile's fused.npz for it")
    if args.labels:
        voc = vocabulary(args.labels)
        summary = res.export_labels(out, voc.pop("vocabulary"), **voc)
    else:
        files = []
        for k, text in enumerate(texts):
            stem = "".join(c if c.isalnum() else "_" for c in text)[:40] + (f"_{k + 1}" if k else "")
            files += res.export_heatmap(out, text, stem)
        summary = {"queries": texts, "files": files}
    print_json(summary) if args.json else print("\n".join(f"wrote {f}" for f in summary["files"]))
    return 0


def _query_instances(args, fc, texts, out, beside=None) -> dict:
    """--instances: instances labelled with a vocabulary, or ranked for each text. ``fc`` is the
    result's features (one tile's for a tiled result: the instances then carry their boxes)."""
    import numpy as np
    from . import io
    from .instances import Instances, export_instances, export_rows
    from .query import QueryEngine
    path = args.instances if args.instances != "auto" else str(beside or os.path.join(
        os.path.dirname(os.path.abspath(args.features)), "instances.npz"))
    if args.instances == "auto" and not os.path.isfile(path):
        raise InputError(path, "no instances beside the features: run `pc-ovseg instances` (or run --instances) "
                               "first, or give --instances FILE")
    inst = Instances.load(path)
    whole = len(inst.ids) == len(fc.cloud)
    if not whole and (beside is None or inst.box_min is None):
        raise InputError(path, f"instances of {len(inst.ids)} points, the features have {len(fc.cloud)}")
    eng = QueryEngine(fc)
    if args.labels:
        from .labels import vocabulary
        voc = vocabulary(args.labels)["vocabulary"]
        if not whole:   # a tiled result: the merged instances' table (their files are the run's)
            from .store import write_json
            write_json(out / "instances.json", {"instances": len(inst), "objects": export_rows(
                inst, inst.boxes(), vocabulary=voc, engine=eng)})
            return {"instances": len(inst), "files": [str(out / "instances.json")]}
        res = export_instances(out, fc, inst, vocabulary=voc, engine=eng)
        files = res["instance_files"]
        if args.format == "scannet":  # the instance benchmark's files, for `eval --instances`
            from .instances import write_scannet_instances
            lab = eng.label_instances(inst, voc)
            scene = args.scene or os.path.splitext(os.path.basename(str(fc.cloud.source or "scene")))[0]
            files += write_scannet_instances(out, scene, inst, lab.labels, lab.confidence, voc.labelset)
        elif args.format:
            raise InputError(None, "--instances --format: only scannet has an instance benchmark format")
        return {"instances": res["instances"], "files": files}
    results, files = [], []
    for k, text in enumerate(texts):
        stem = "".join(c if c.isalnum() else "_" for c in text)[:40] + (f"_{k + 1}" if k else "")
        found = eng.instances(text, inst, top=args.top)
        result = {"query": text, "instances": [o.to_dict() for o in found], "files": []}
        if whole:
            rank = np.full(len(inst.ids), -1, np.int32)
            for r, obj in enumerate(found):
                rank[obj.point_ids] = r
            io.write(out / f"instances_{stem}.ply", fc.cloud, labels=rank,
                     scores=np.array([o.score for o in found] + [0.0], np.float32)[rank])
            result["files"].append(str(out / f"instances_{stem}.ply"))
        result["files"].append(str(out / f"instances_{stem}.json"))
        (out / f"instances_{stem}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
        files += result["files"]
    return results[0] if len(results) == 1 else {"queries": results, "files": files}


@command("query", "labels for a vocabulary, or a heatmap and objects for each text query")
@arguments(_query_args)
def cmd_query(args) -> int:
    from pathlib import Path

    from . import io
    from .colors import heat_colors
    from .data import FeatureCloud
    from .export import export_labels, object_labels
    from .query import QueryEngine, group_objects, read_queries
    if args.labels is not None and not args.labels.strip():
        raise InputError(None, "--labels is empty: give a label set, a file, or comma-separated names")
    if args.format and not args.labels:
        raise InputError(None, "--format needs --labels (a label set with raw ids, e.g. scannet20, semantickitti19)")
    texts = list(dict.fromkeys(args.text or (read_queries(args.queries) if args.queries else [])))
    for text in texts:  # all checked before any work
        if not text.strip() or len(text) > 500:
            raise InputError(args.queries, f"every query must be 1-500 characters, got {text[:60]!r}")
    out = Path(args.out)
    if _is_tiled(args.features):  # a tiled run: tile by tile, merged files
        return _query_tiled(args, texts, out)
    fc = FeatureCloud.load(args.features)
    out.mkdir(parents=True, exist_ok=True)
    if args.instances:
        summary = _query_instances(args, fc, texts, out)
    elif args.labels:
        from .labels import vocabulary
        voc = vocabulary(args.labels)
        summary = export_labels(out, fc, voc.pop("vocabulary"), benchmark=args.format, scene=args.scene, **voc)
    else:
        eng = QueryEngine(fc)  # one engine: the text encoder loads at most once, and not at all on cache hits
        results, stems = [], set()
        for text in texts:
            heat = eng.heatmap(text)
            objs = group_objects(fc, heat, threshold=args.threshold, min_points=args.min_points)
            stem = base = "".join(c if c.isalnum() else "_" for c in text)[:40]
            k = 1
            while stem in stems:  # "chair?" and "chair!" must not overwrite each other
                k += 1
                stem = f"{base}_{k}"
            stems.add(stem)
            for ext in ("ply", "npz"):
                io.write(out / f"heatmap_{stem}.{ext}", fc.cloud, scores=heat, colors=heat_colors(heat),
                         labels=object_labels(len(heat), objs))
            result = {"query": text, "points_selected": int((heat >= args.threshold).sum()),
                      "objects": [o.to_dict() for o in objs],
                      "files": [str(out / f"heatmap_{stem}.ply"), str(out / f"heatmap_{stem}.npz")]}
            (out / f"objects_{stem}.json").write_text(json.dumps(result, indent=2))
            results.append(result)
        if args.text is not None and len(args.text) == 1:  # one --text: the summary it always gave
            summary = results[0]
        else:
            summary = {"queries": results, "files": [f for r in results for f in r["files"]]
                       + [str(out / "queries.json")]}
            (out / "queries.json").write_text(json.dumps(summary, indent=2))
    print_json(summary) if args.json else print("\n".join(f"wrote {f}" for f in summary["files"]))
    return 0


def _eval_args(p):
    p.add_argument("pred", help="predictions: a run/query export (labels.ply/.las/.npz: it declares its prediction "
                                "field and label set), a cloud with one label field, a label file (.npy, .label, "
                                ".txt), or a FeatureCloud .npz (labelled as its run labelled it, or with --labels)")
    p.add_argument("--gt", required=True, help="ground truth: a cloud with a label field or a label file")
    p.add_argument("--classes", help="GT label ids: a label set (pc_ovseg.labels.list_labelsets(), e.g. scannet20, "
                                     "semantickitti19, asprs), a JSON/.txt file, or comma-separated names by id "
                                     "('ignore' = not evaluated); default for an export: the label set it declares")
    p.add_argument("--labels", help="the vocabulary behind PRED (same forms): a FeatureCloud PRED is queried with "
                                    "it; a plain label file then holds positions in it. Not needed for exports, "
                                    "which declare theirs. Matched to --classes by class name")
    p.add_argument("--pred-field", help="per-point field of PRED holding labels (default: the declared one, else the "
                                        "only label-like field: label, classification, ...)")
    p.add_argument("--gt-field", help="per-point field of GT holding labels (default: label, classification, ...)")
    p.add_argument("--ignore", default="", help="more label ids not to evaluate, comma-separated, e.g. 0,255")
    p.add_argument("--remap-gt", action="store_true",
                   help="GT holds raw dataset ids: map them through the label set (NYU40 -> ScanNet-20, "
                        "SemanticKITTI .label -> 19)")
    p.add_argument("--remap-pred", action="store_true", help="the same for PRED")
    p.add_argument("--json", action="store_true", help="print one JSON object (miou, macc, coverage, per_class, ...)")
    p.add_argument("--chart", metavar="PNG", help="write a per-class IoU bar chart")
    p.add_argument("--all", action="store_true", help="list classes absent from GT and predictions too")
    p.add_argument("--instances", action="store_true",
                   help="instance AP / AP50 / AP25 as ScanNet's evaluate_semantic_instance.py: PRED and GT are "
                        "that benchmark's <scene>.txt files (comma-separate several scenes), --classes the label set")
    p.add_argument("--class-agnostic", action="store_true", help="with --instances: every mask as one class")


@command("eval", "score per-point predictions against ground truth: mIoU, mAcc, coverage, confusion")
@arguments(_eval_args)
def cmd_eval(args) -> int:
    from . import eval as ev
    from .errors import InputError
    if args.instances:
        from .eval_instances import evaluate_instance_files
        preds, gts = args.pred.split(","), args.gt.split(",")
        if len(preds) != len(gts):
            raise InputError(None, f"--instances: {len(preds)} prediction files for {len(gts)} GT files")
        if not args.classes:
            raise InputError(None, "--instances needs --classes (the label set, e.g. scannet20 or scannet200)")
        res = evaluate_instance_files(preds, gts, args.classes, class_agnostic=args.class_agnostic)
        j = res.to_json()
        if args.json:
            print_json(j)
        else:
            pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
            print(f"AP {pct(j['ap'])}  AP50 {pct(j['ap50'])}  AP25 {pct(j['ap25'])}  ({len(gts)} scenes)")
            for n, v in j["per_class"].items():
                print(f"  {n:<24} AP {pct(v['ap']):>5}  AP50 {pct(v['ap50']):>5}  AP25 {pct(v['ap25']):>5}")
        return 0
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


# --- bench (datasets + executors) ------------------------------------------------------------
def _bench_args(p):
    from .config import BenchConfig, EncoderConfig, OutputConfig, ScaleConfig, ViewsConfig
    p.add_argument("dataset", help="dataset name (scannet, matterport, s3dis, sensaturban, semantickitti)")
    p.add_argument("--root", help="the dataset root, as the dataset ships it")
    p.add_argument("--out", help="output folder (per-scene results; a rerun resumes)")
    p.add_argument("--oracle", dest="bench.oracle", action="store_true", default=argparse.SUPPRESS,
                   help="2D predictions from the dataset's ground truth: measures views + fusion without CLIP weights")
    p.add_argument("--config", metavar="FILE", help="run configuration (YAML/JSON) for views, encoder, fusion")
    p.add_argument("--dump-config", action="store_true", help="print the run configuration and exit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the split's results as one JSON object")
    config_options(p, "bench", BenchConfig, title="benchmark")
    config_options(p, "scale", ScaleConfig, title="tiles (scenes bigger than a tile) and where scenes run")
    config_options(p, "views", ViewsConfig, title="views")
    config_options(p, "encoder", EncoderConfig, title="2D encoders")
    config_options(p, "output", OutputConfig, skip=("labels",), title="labels")
    p.add_argument("--labels", dest="output.labels", default=argparse.SUPPRESS,
                   help="label set the split is scored in (default: the dataset's first, e.g. scannet20)")
    from .config import InstancesConfig
    p.add_argument("--instances", action="store_true",
                   help="also make 3D instances per scene and score the split by instance AP / AP50 / AP25 "
                        "(ScanNet's evaluate_semantic_instance.py); with --oracle the 2D masks are the GT instances")
    config_options(p, "instances", InstancesConfig, title="3D instances")


@command("bench", "run and score a whole dataset split in its official layout (locally or on Ray)")
@arguments(_bench_args)
def cmd_bench(args) -> int:
    from .bench import run_bench
    from .config import BenchConfig, _build
    cfg = run_config(args, ("views", "encoder", "output", "scale", "instances"))
    if args.instances:
        cfg.instances.enabled = True
    if args.dump_config:
        print(cfg.dump(), end="")
        return 0
    if not args.root or not args.out:
        raise InputError(None, "--root and --out are required")
    bench = _build(BenchConfig, {k.partition(".")[2]: v for k, v in vars(args).items() if k.startswith("bench.")},
                   "bench", None)
    s = run_bench(args.dataset, args.root, args.out, cfg, bench)
    if args.json:
        print_json({k: v for k, v in s.items() if k not in ("confusion", "config")})
    else:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        print(f"{s['dataset']} {s['split']} ({s['labelset']}): {s['scenes_done']}/{s['scenes']} scenes "
              f"({s['scenes_cached']} from an earlier run, {s['scenes_failed']} failed), mIoU {pct(s['miou'])}, "
              f"mAcc {pct(s['macc'])}, coverage {pct(s['coverage'])}, {s['seconds']:.1f} s")
        for g, v in (s.get("groups") or {}).items():
            print(f"  {g}: mIoU {pct(v['miou'])} ({v['classes_present']} classes present)")
        if s.get("instance_ap"):
            a, c = s["instance_ap"], s["instance_ap_class_agnostic"]
            print(f"  instances: AP {pct(a['ap'])}, AP50 {pct(a['ap50'])}, AP25 {pct(a['ap25'])}; class-agnostic "
                  f"AP {pct(c['ap'])}, AP50 {pct(c['ap50'])}, AP25 {pct(c['ap25'])}")
        for n, v in s["failed"].items():
            print(f"  failed {n}: {v['error']}")
        print(f"  wrote {os.path.join(args.out, 'results.json')}, results.md, iou.png")
    return 0 if s["scenes_done"] else 2


# --- distill / predict (backbone) ------------------------------------------------------------
def _distill_args(p):
    from .config import Num
    p.add_argument("fused", nargs="*", help="fused feature files (.npz from `pc-ovseg fuse`/`run`)")
    p.add_argument("--dataset", help="train on a directory of fused scenes instead (*.npz or bench's */fused.npz), "
                                     "streamed from disk in random crops of --point-budget points")
    p.add_argument("--val", help="directory of held-out fused scenes, validated every epoch (with --dataset)")
    p.add_argument("--preset", choices=["openscene-indoor", "openscene-outdoor", "cpu-outdoor"],
                   help="recipe for --dataset (docs/distill.md); options given explicitly win")
    p.add_argument("--point-budget", type=checked(Num(int, 0, None)), default=None,
                   help="points per random sphere crop with --dataset (0: whole scenes; default 20000)")
    p.add_argument("--loss", choices=["cosine", "cosine+contrast", "ce"], default=None,
                   help="with --dataset: 1-cos (default), plus a contrastive term against a label-space "
                        "vocabulary, or supervised cross-entropy on the scenes' 'label' field")
    p.add_argument("--schedule", choices=["poly", "cosine", "constant"], default=None,
                   help="with --dataset: learning-rate schedule (default poly)")
    p.add_argument("--steps-per-epoch", type=checked(Num(int, 1, None, none=True)), default=None,
                   help="with --dataset: steps between validations (default: one crop per scene)")
    p.add_argument("--workers", type=checked(Num(int, 0, 64)), default=0,
                   help="with --dataset: DataLoader worker processes (0: one prefetch thread)")
    p.add_argument("--cpu-budget", action="store_true",
                   help="--max-minutes counts this process's CPU time instead of wall time")
    p.add_argument("--out", required=True, help="checkpoint to write (rewritten every epoch; rerun to resume)")
    p.add_argument("--epochs", type=checked(Num(int, 1, 100_000)), default=100)
    p.add_argument("--max-minutes", type=checked(Num(float, 0, None, open_lo=True, none=True)), default=None,
                   help="wall-time budget: no step starts that would end past it (judged by the last step)")
    p.add_argument("--voxel-size", type=checked(Num(float, 0, 100, open_lo=True)), default=None,
                   help="metres: 0.02 indoor (default), 0.05 outdoor")
    p.add_argument("--color", action="store_true", help="use point colour as input (default: geometry only)")
    p.add_argument("--inputs", help="input features instead: ones, height, color, combined with '+'")
    p.add_argument("--arch", default="MinkUNet18A", help="MinkUNet14A, MinkUNet18A (OpenScene), MinkUNet18B, ...")
    p.add_argument("--planes", help="override the 8 layer widths, e.g. 16,32,64,128,64,64,48,48 (smaller = faster)")
    p.add_argument("--lr", type=checked(Num(float, 0, 10, open_lo=True)), default=None, help="default 1e-3")
    p.add_argument("--batch-size", type=checked(Num(int, 1, 1024)), default=None,
                   help="scenes per step (per process under torchrun)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a bar over the steps with loss and time/budget on stderr (default: when it is a terminal)")
    p.add_argument("--json", action="store_true")


@command("distill", "train the 3D U-Net to predict fused features from geometry (torchrun for multi-GPU)")
@arguments(_distill_args)
def cmd_distill(args) -> int:
    from pathlib import Path

    from .backbone.train import distill
    from .config import resolve_device
    from .errors import InputError, check_input_path
    if bool(args.fused) == bool(args.dataset):
        raise InputError(None, "give fused files or --dataset DIR (one of them)")
    if args.val and not args.dataset:
        raise InputError(None, "--val needs --dataset")
    for f in args.fused:
        check_input_path(f)
    resolve_device(args.device)
    overrides = {}
    if args.planes:
        try:
            planes = tuple(int(v) for v in args.planes.split(","))
        except ValueError:
            planes = ()
        if len(planes) != 8 or min(planes) < 1:
            raise InputError(None, f"--planes wants 8 positive comma-separated widths, got {args.planes!r}")
        overrides = {"planes": planes, "init_dim": planes[0]}
    if args.dataset:
        r = _distill_dataset(args, overrides)
    else:
        r = distill(args.fused, args.out, epochs=args.epochs, voxel_size=args.voxel_size or 0.02,
                    use_color=args.color, inputs=args.inputs, arch=args.arch, lr=args.lr or 1e-3,
                    batch_size=args.batch_size or 2, max_minutes=args.max_minutes, device=args.device,
                    resume=not args.no_resume, progress=args.progress, model_overrides=overrides)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    loss_file = str(Path(r.checkpoint).with_suffix(".loss.csv"))  # the file train.py writes
    # the numbers of the loss file: loss = mean of its last epoch's rows (a cut-short epoch counts)
    summary = {"checkpoint": r.checkpoint, "epochs": r.epochs, "steps": r.steps, "loss": r.last_loss,
               "loss_epoch": r.loss_epoch, "loss_steps": r.loss_steps, "loss_file": loss_file,
               "seconds": round(r.seconds, 2), "stopped_early": r.stopped_early}
    if args.dataset:
        summary.update({"best": r.best, "validations": len(r.validation)})
    if args.json:
        print_json(summary)
        return 0
    partial = f" + {r.loss_steps} steps of epoch {r.loss_epoch}" if r.loss_epoch > r.epochs else ""
    budget = f" (time budget of {args.max_minutes:g} min reached)" if r.stopped_early else ""
    loss = (f"last epoch mean loss {r.last_loss:.4f} (epoch {r.loss_epoch}, {r.loss_steps} steps in {loss_file})"
            if r.loss_steps else "no step ran")
    print(f"wrote {r.checkpoint}: {r.epochs} epochs{partial}, {r.steps} steps in {r.seconds:.0f} s{budget}; {loss}")
    if args.dataset and r.best:
        print(f"best validation {r.best['metric']} {r.best['value']:.4f} (epoch {r.best['epoch']}) in {r.best['checkpoint']}")
    return 0


def _distill_dataset(args, overrides):
    """``distill --dataset DIR [--val DIR] [--preset NAME]``: backbone.dataset.train_dataset."""
    from .backbone.dataset import PRESETS, CropConfig, train_dataset
    pre = dict(PRESETS.get(args.preset, {}))
    given = {"voxel_size": args.voxel_size, "lr": args.lr, "batch_size": args.batch_size, "loss": args.loss,
             "schedule": args.schedule, "point_budget": args.point_budget,
             "inputs": args.inputs or ("color" if args.color else None)}
    if args.arch != "MinkUNet18A" or "arch" not in pre:
        pre["arch"] = args.arch
    opts = {**{"voxel_size": 0.05, "lr": 2e-3, "batch_size": 1, "loss": "cosine", "schedule": "poly",
               "point_budget": 20_000, "inputs": "ones", "optimizer": "adamw"},
            **pre, **{k: v for k, v in given.items() if v is not None}}
    budget = opts.pop("point_budget")
    return train_dataset(args.dataset, args.out, val=args.val, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, crop=CropConfig(point_budget=budget or None),
                         max_minutes=args.max_minutes, cpu_budget=args.cpu_budget, workers=args.workers,
                         device=args.device, resume=not args.no_resume, progress=args.progress,
                         model_overrides=overrides, **opts)


def _predict_args(p):
    from .config import Num
    p.add_argument("checkpoint", help="a `pc-ovseg distill` checkpoint or an OpenScene MinkUNet18A checkpoint")
    p.add_argument("input", help="any cloud or mesh pc_ovseg reads (or a feature .npz: its cloud is used)")
    p.add_argument("--out", required=True, help="feature file to write (.npz, read by query/eval/view)")
    p.add_argument("--tta", type=checked(Num(int, 1, 64)), default=1,
                   help="average over N voxelisations (rotated, shifted)")
    p.add_argument("--voxel-size", type=checked(Num(float, 0, 100, open_lo=True, none=True)), default=None,
                   help="override the checkpoint's voxel size")
    p.add_argument("--layout", help="column layout of raw .bin/.npy input, e.g. xyzrgb")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")


@command("predict", "features for every point of a cloud from the distilled 3D model (no images)")
@arguments(_predict_args)
def cmd_predict(args) -> int:
    import time

    from .backbone.predict import predict
    from .errors import check_input_path
    from .backbone.predict import load_model
    from .config import resolve_device
    from .data import FeatureCloud, is_feature_file
    check_input_path(args.input)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    model = load_model(args.checkpoint, voxel_size=args.voxel_size)  # cheap checks before reading the cloud
    if args.input.endswith(".npz") and is_feature_file(args.input):
        cloud = FeatureCloud.load(args.input).cloud
    else:
        from .io import read_cloud
        cloud = read_cloud(args.input, layout=args.layout)
    fc = predict(model, cloud, tta=args.tta, device=device)
    fc.save(args.out)
    summary = {"features": args.out, "points": len(fc.cloud), "dim": int(fc.features.shape[1]), "tta": args.tta,
               "seconds": round(time.perf_counter() - t0, 2)}
    print_json(summary) if args.json else print(f"wrote {args.out} ({summary['points']} points)")
    return 0


# --- view (viewer) ---------------------------------------------------------------------------
def _view_args(p):
    from .config import Num
    p.add_argument("result", help="a FeatureCloud .npz (fused or distilled) or a plain cloud file")
    p.add_argument("--port", type=checked(Num(int, 0, 65535)), default=0, help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--screenshot", metavar="PATH", help="save the page as PNG in headless Chromium, then exit")
    p.add_argument("--query", help="start with this query's heatmap (also for --screenshot)")
    p.add_argument("--vocabulary", help="comma-separated class names for the label view")
    p.add_argument("--mode", choices=["rgb", "label", "heatmap", "coverage"], help="starting colour mode")
    p.add_argument("--point-size", type=checked(Num(float, 0, 100, open_lo=True, none=True)),
                   help="starting point size in pixels")
    p.add_argument("--max-display-points", type=checked(Num(int, 1, 100_000_000)), default=2_000_000,
                   help="subsample larger clouds for display; queries still use every point")
    p.add_argument("--layout", help="raw .bin/.npy column layout of a plain cloud, e.g. xyzrgb")
    p.add_argument("--up", choices=["auto", "x", "y", "z", "-x", "-y", "-z"], default="auto",
                   help="the data's up axis (default auto: from the camera poses of the frames the cloud "
                        "was made from, else from its planes)")
    p.add_argument("--labels", help="label set (scannet20, a JSON file or comma-separated names): a plain "
                                    "cloud's label field holds its class ids; a result's label view uses it")
    p.add_argument("--follow", action="store_true",
                   help="a growing map (pc-ovseg map --out DIR, or its map.npz): show each new snapshot")
    p.add_argument("--remap", action="store_true",
                   help="with --labels: the label field holds the set's raw dataset ids (e.g. NYU40 ids)")


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
    if args.remap and not args.labels:
        raise InputError(None, "--remap needs --labels: the label set whose raw ids the field holds")
    labelset = None
    if args.labels:
        from .labels import parse_classes
        labelset = parse_classes(args.labels)
    from .viewer.follow import follow, map_file
    result = map_file(args.result)   # a map folder shows its map.npz

    def make_scene():
        return ViewerScene.from_path(result, layout=args.layout, max_display_points=args.max_display_points,
                                     up=args.up, labelset=labelset, remap=args.remap)
    scene = make_scene()
    scene.prepare()
    try:
        server = start_server(scene, args.host, args.port, quiet=not os.environ.get("PC_OVSEG_DEBUG"))
    except OSError as err:
        raise InputError(None, f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    if args.follow:
        follow(server, result, make_scene)
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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``pc-ovseg run: error: argument --zoom: must be >= 1, got 0``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; with ``only``, just that one gets its options (imports stay lazy, so
    `pc-ovseg info` never loads torch)."""
    from . import __version__
    parser = _Parser(prog="pc-ovseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pc_ovseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
