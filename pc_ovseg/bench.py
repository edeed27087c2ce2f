"""``pc-ovseg bench``: a whole dataset split, scored as the published tables score it.

Each scene is one unit of work run by an executor (pc_ovseg.executors: here, worker processes
or Ray actors): GT scene -> views (the dataset's frames every ``frame_skip``, or rendered views)
-> 2D features (CLIP, the GT oracle, or precomputed) -> fusion (-> the distilled 2D-3D ensemble)
-> labels -> the scene's confusion matrix. Layout of ``OUT``:

    OUT/<scene>/cache/         per-view features and visibility (a killed run resumes here)
    OUT/<scene>/fused.npz      the scene's FeatureCloud; labels.ply (+ the benchmark's own file)
    OUT/<scene>/result.json    its confusion matrix, coverage, seconds and peak memory
    OUT/results.json           the split: one confusion matrix summed over scenes -> mIoU, mAcc,
                               per-class IoU (+ ScanNet200 head/common/tail), failed scenes
    OUT/results.md, OUT/iou.png

A scene whose result.json holds the same settings key is not run again; a failed scene is
retried, then reported and skipped, so one bad scene never stops a split.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from .config import BenchConfig, RunConfig
from .errors import InputError
from .executors import peak_memory_mb, reset_peak_memory
from .store import digest, file_stamp, finished, write_json, write_text

_PKG = Path(__file__).resolve().parent
PUBLISHED = next((p for p in (_PKG.parent / "data" / "benchmarks" / "published.json",
                              _PKG / "_data" / "benchmarks" / "published.json") if p.is_file()),
                 _PKG.parent / "data" / "benchmarks" / "published.json")


@dataclass
class BenchJob:
    """Everything a worker needs, picklable: it travels to worker processes and Ray actors."""

    dataset: str
    root: str
    out: str
    run: RunConfig
    bench: BenchConfig
    labels: str
    key: str
    view_progress: bool = False


@dataclass
class _State:
    """A worker's loaded parts, made once per worker by :func:`_setup`."""

    ds: object
    view_encoder: object = None
    text_encoder: object = None
    distilled: object = None


def _setup(job: BenchJob) -> _State:
    from .datasets import get_dataset
    ds = get_dataset(job.dataset, job.root, labels=job.labels, frame_skip=job.bench.frame_skip)
    st = _State(ds)
    if job.bench.features:
        spec = job.bench.features_encoder
        if spec and not spec.startswith("labels"):
            from .encoders import get_encoder
            st.text_encoder = get_encoder(spec, device=job.run.encoder.device)
        elif not spec:
            st.text_encoder = job.run.encoder.build_encoder()
    elif not job.bench.oracle:
        st.view_encoder = job.run.encoder.build()   # the 2D model, loaded once per worker
        st.text_encoder = getattr(st.view_encoder, "encoder", None)
    if job.run.output.distilled:
        from .backbone.predict import load_model
        st.distilled = load_model(job.run.output.distilled)
    return st


# --- one scene ------------------------------------------------------------------------------------

def bench_scene(job: BenchJob, state: _State, name: str) -> dict:
    """Run and score one scene; writes OUT/<scene>/ and returns its result.json content."""
    from .eval import evaluate
    from .export import export_labels
    from .pipeline import ensemble_with_distilled, fuse_scene, scene_from
    from .query import QueryEngine

    t0 = time.perf_counter()
    reset_peak_memory()
    cfg, b = job.run, job.bench
    sdir = Path(job.out) / _safe(name)
    gt = state.ds.load(name)
    ls = gt.labelset
    info: dict = {"views": 0, "views_cached": 0}
    from .tiles import tile_budget
    budget = tile_budget(gt.cloud, cfg.scale) if gt.frames is None and not b.features else None
    if budget is not None:  # a big frame-less scene (a SensatUrban block): tile by tile
        return _bench_tiled(job, state, name, gt, sdir, budget, t0)
    if b.features:
        fc = precomputed_features(b.features, name, gt.cloud, b.features_encoder or getattr(state.text_encoder, "spec", ""))
    else:
        if b.oracle:
            from .oracle import OracleLabels
            inst = gt.instances if cfg.instances.enabled else None   # masks = the GT instances
            enc = OracleLabels(gt.labels, ls.class_names, noise=b.noise, seed=b.seed, instances=inst)
        else:
            enc = state.view_encoder
        data = gt.frames if gt.frames is not None else (gt.mesh if gt.mesh is not None else gt.cloud)
        scene = scene_from(data, cfg.views, cloud=gt.cloud, plan_cache=sdir / "cache", progress=job.view_progress,
                           source=gt.source)
        fc, stats = fuse_scene(scene, enc, sdir / "cache", cfg, progress=job.view_progress)
        info = {"views": stats.views, "views_cached": stats.cached, "kind": scene.kind,
                "timings": {k: round(v, 3) for k, v in stats.timings.items()}}
    fc.save(sdir / "fused.npz")
    info["coverage_fused"] = round(fc.coverage, 6)
    text = state.text_encoder if not (b.oracle or fc.encoder.startswith("labels:")) else None
    if cfg.instances.enabled:
        info.update(_scene_instances(fc, stats, sdir, cfg, gt, text))
    if state.distilled is not None:
        fc = ensemble_with_distilled(fc, state.distilled, ls.vocabulary(), sdir, tta=cfg.output.tta,
                                     device=cfg.encoder.device, text_encoder=text)
    pos = np.asarray(QueryEngine(fc, text_encoder=text).labels(ls).labels).reshape(-1).astype(np.int64)
    pred = np.where(pos >= 0, ls.ids[np.maximum(pos, 0)], -1)
    res = evaluate(pred, gt.labels, ls)
    fmt = getattr(state.ds, "benchmark_format", None)
    export_labels(sdir, fc, ls, formats=tuple(f for f in cfg.output.formats if f != "las") or ("ply",),
                  benchmark=fmt if fmt and ls.raw_map else None, scene=name, text_encoder=text)
    out = {"scene": name, "key": job.key, "points": len(gt.cloud), **info,
           "coverage": round(res.coverage, 6), "miou": _num(res.miou), "macc": _num(res.macc),
           "class_ids": res.class_ids.tolist(), "confusion": res.confusion.tolist(),
           "unpredicted": res.unpredicted.tolist(), "num_ignored": res.num_ignored,
           "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": peak_memory_mb(),
           "frames": len(gt.frames) if gt.frames is not None else 0, "worker_pid": os.getpid()}
    write_json(sdir / "result.json", out)
    return out


INSTANCE_STUFF = ("wall", "floor", "ceiling")   # not instances in ScanNet's benchmark


def _scene_instances(fc, stats, sdir: Path, cfg: RunConfig, gt, text) -> dict:
    """The scene's instances (exported as `pc-ovseg instances` does) and what the split's instance
    AP needs of them: per point the predicted instance and the GT, per instance class and confidence."""
    from .instances import Instances
    from .pipeline import instances_stage
    from .query import QueryEngine
    ls = gt.labelset
    t = time.perf_counter()
    instances_stage(fc, stats, sdir, cfg, vocabulary=ls.vocabulary(), text_encoder=text)
    inst = Instances.load(sdir / "instances.npz")
    _instance_eval(sdir, inst, QueryEngine(fc, text_encoder=text), gt)
    return {"instances": len(inst), "instance_seconds": round(time.perf_counter() - t, 3)}


def _instance_eval(sdir: Path, inst, engine, gt) -> None:
    """What the split's instance AP needs of a scene (split_instance_ap): per point the predicted
    instance and the GT, per instance its class and confidence."""
    if gt.instances is None:
        return
    ls = gt.labelset
    lab = engine.label_instances(inst, ls.vocabulary())
    cls = np.asarray(ls.ids, np.int64)[lab.labels] if len(inst) else np.zeros(0, np.int64)
    np.savez_compressed(sdir / "instance_eval.npz", pred=inst.ids.astype(np.int32), label=cls,
                        score=(lab.confidence * inst.scores).astype(np.float32),
                        gt_sem=np.asarray(gt.labels, np.int32), gt_inst=np.asarray(gt.instances, np.int32))


def split_instance_ap(outp: Path, names: list[str], ls) -> dict | None:
    """Instance AP of the split: every scene's instances pooled per class, as the script pools them."""
    from .eval_instances import InstancePrediction, evaluate_instances
    scenes = []
    for n in names:
        p = outp / _safe(n) / "instance_eval.npz"
        if not p.is_file():
            continue
        with np.load(p) as z:
            ids = z["pred"].astype(np.int64)
            order = np.argsort(ids, kind="stable")
            starts = np.searchsorted(ids[order], np.arange(len(z["score"]) + 1))
            preds = [InstancePrediction(order[starts[k]:starts[k + 1]], int(z["label"][k]), float(z["score"][k]))
                     for k in range(len(z["score"]))]
            scenes.append((preds, z["gt_sem"].astype(np.int64), z["gt_inst"].astype(np.int64)))
    if not scenes:
        return None
    evaluated = [int(i) for i, n in zip(ls.ids, ls.names) if n not in INSTANCE_STUFF]
    names_ev = [n for n in ls.names if n not in INSTANCE_STUFF]
    sem = evaluate_instances(scenes, evaluated, names_ev)
    agn = evaluate_instances(scenes, evaluated, names_ev, class_agnostic=True)
    return {"instance_ap": sem.to_json(), "instance_ap_class_agnostic": agn.to_json(),
            "instance_scenes": len(scenes), "instance_classes": names_ev}


def _bench_tiled(job: BenchJob, state: _State, name: str, gt, sdir: Path, budget: int, t0: float) -> dict:
    """One scene bigger than a tile: pc_ovseg.tiles in this worker (tiles one after another), GT
    carried as a field of the cloud, scored tile by tile and summed."""
    from .tiles import OracleSpec, run_tiled
    ls = gt.labelset
    cfg = replace(job.run, scale=replace(job.run.scale, executor="local", workers=1),
                  output=replace(job.run.output, labels=ls.name))
    with_inst = cfg.instances.enabled and gt.instances is not None
    cloud = gt.cloud.with_fields(gt_label=gt.labels, **({"gt_instance": gt.instances} if with_inst else {}))
    spec = OracleSpec("gt_label", list(ls.class_names), labelset=ls.name)
    oracle = replace(spec, noise=job.bench.noise, seed=job.bench.seed,
                     instance_field="gt_instance" if with_inst else None) if job.bench.oracle else None
    s = run_tiled(cloud, sdir, cfg, budget=budget, oracle=oracle, gt=spec,
                  view_encoder=None if job.bench.oracle else state.view_encoder)
    if not s["tiles_done"]:
        raise InputError(gt.source, f"no tile finished ({next(iter(s['failed'].values()))['error']})")
    if cfg.instances.enabled and (sdir / "instances.npz").is_file():
        from .data import FeatureCloud
        from .instances import Instances
        from .query import QueryEngine
        first = next(p for t in sorted((sdir / "tiles").iterdir()) if (p := t / "fused.npz").is_file())
        text = None if job.bench.oracle else state.text_encoder
        _instance_eval(sdir, Instances.load(sdir / "instances.npz"), QueryEngine(FeatureCloud.load(first),
                                                                                 text_encoder=text), gt)
    out = {"scene": name, "key": job.key, "points": len(gt.cloud), "views": s["views"], "views_cached": 0,
           "tiles": s["tiles"], "tiles_failed": s["tiles_failed"], "coverage": s["eval_coverage"],
           "miou": _num(s["miou"]), "macc": _num(s["macc"]), "class_ids": s["class_ids"],
           "confusion": s["confusion"], "unpredicted": s["unpredicted"], "num_ignored": s["num_ignored"],
           "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": s["peak_rss_mb_max"], "frames": 0,
           "worker_pid": os.getpid()}
    write_json(sdir / "result.json", out)
    return out


def _work(job: BenchJob, state: _State, name: str) -> dict:
    return bench_scene(job, state, name)


def features_dir(spec: str) -> Path:
    """The folder of ``--features precomputed:DIR``."""
    kind, _, folder = spec.partition(":")
    if kind != "precomputed" or not folder:
        raise InputError(None, f"--features must be precomputed:DIR, got {spec!r}")
    if not os.path.isdir(folder):
        raise InputError(folder, "--features folder not found")
    return Path(folder)


def precomputed_features(spec: str, name: str, cloud, encoder: str):
    """Fused features made elsewhere for one scene: ``DIR/<scene>.npz`` / ``DIR/<scene>/fused.npz``
    (FeatureCloud), or OpenScene's ``DIR/<scene>[_0].pt`` (fp16 ``feat`` of the points in the
    boolean ``mask_full``), read with weights_only; the scene's own points are the cloud."""
    from .data import FeatureCloud
    from .store import load_checkpoint
    base = features_dir(spec)
    for p in (base / f"{name}.npz", base / name / "fused.npz"):
        if p.is_file():
            fc = FeatureCloud.load(p)
            if len(fc.weight) != len(cloud):
                raise InputError(p, f"holds {len(fc.weight)} points, the scene has {len(cloud)}")
            fc.cloud = cloud
            return fc
    for p in (base / f"{name}.pt", base / f"{name}_0.pt"):
        if p.is_file():
            d = load_checkpoint(p, what="feature file")
            if not isinstance(d, dict) or "feat" not in d or "mask_full" not in d:
                raise InputError(p, "not an OpenScene fused-feature file (needs 'feat' and 'mask_full')")
            mask = np.asarray(d["mask_full"].cpu().numpy() if hasattr(d["mask_full"], "cpu") else d["mask_full"]).astype(bool).reshape(-1)
            feat = d["feat"].float().cpu().numpy() if hasattr(d["feat"], "cpu") else np.asarray(d["feat"], np.float32)
            if len(mask) != len(cloud):
                raise InputError(p, f"mask_full has {len(mask)} points, the scene has {len(cloud)}")
            if feat.ndim != 2 or len(feat) != int(mask.sum()):
                raise InputError(p, f"feat is {tuple(feat.shape)}, mask_full selects {int(mask.sum())} points")
            full = np.zeros((len(cloud), feat.shape[1]), np.float32)
            full[mask] = feat
            n = np.linalg.norm(full, axis=1, keepdims=True)
            full = np.where(n > 1e-8, full / np.maximum(n, 1e-8), 0).astype(np.float16)
            seen = n[:, 0] > 1e-8
            cls = encoder.partition(":")[2].split(",") if encoder.startswith("labels:") else None
            return FeatureCloud(cloud, full, seen.astype(np.float32), seen.astype(np.uint16), encoder=encoder,
                                class_names=cls, meta={"source": str(p), "openscene": True})
    raise InputError(base, f"no features for scene {name} ({name}.npz, {name}/fused.npz or {name}.pt)")


# --- a split --------------------------------------------------------------------------------------

def run_bench(dataset: str, root, out, cfg: RunConfig | None = None, bench: BenchConfig | None = None) -> dict:
    """Every scene of ``bench.split`` through the executor; returns the results.json content."""
    from .datasets import get_dataset
    from .eval import EvalResult, group_scores, save_bar_chart
    from .executors import get_executor

    t0 = time.perf_counter()
    cfg, bench = cfg or RunConfig(), bench or BenchConfig()
    ds = get_dataset(dataset, root, labels=cfg.output.labels, frame_skip=bench.frame_skip)
    ds.check_split(bench.split)
    if bench.features and bench.oracle:
        raise InputError(None, "--oracle and --features are two sources of 2D features: give one")
    if bench.features:
        features_dir(bench.features)   # a wrong folder is one error now, not one per scene
    if bench.features and cfg.instances.enabled:
        raise InputError(None, "--instances needs each view's 2D masks; precomputed --features have none")
    names = ds.scenes(bench.split)
    if bench.scenes:
        want = [s.strip() for s in bench.scenes.split(",") if s.strip()]
        missing = [s for s in want if s not in names]
        if missing:
            raise InputError(ds.root, f"split {bench.split!r} has no scene {missing[0]!r}")
        names = want
    if bench.limit:
        names = names[: bench.limit]
    if not names:
        raise InputError(ds.root, f"split {bench.split!r} holds no scenes")
    ls = ds.labelset
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    sc = cfg.scale
    key = digest(dataset, os.path.abspath(ds.root), ls.name, bench.result_parts(), cfg.cache_parts(),
                 asdict(cfg.instances),
                 file_stamp(cfg.output.distilled), [sc.tiles, sc.tile_points, sc.tile_halo], length=16)
    done = {n: r for n in names if (r := finished(outp / _safe(n) / "result.json", key)) is not None}
    todo = [n for n in names if n not in done]
    workers = sc.workers or 1
    job = BenchJob(dataset, ds.root, str(outp), cfg, bench, ls.name, key,
                   view_progress=cfg.output.progress and sc.executor == "local" and workers == 1)
    failed = {}
    if todo:
        with get_executor(sc.executor, **sc.executor_kw()) as ex:
            for o in ex.map(partial(_work, job), todo, setup=partial(_setup, job), retries=sc.retries,
                            progress=cfg.output.progress, desc=f"{dataset} {bench.split}"):
                if o.ok:
                    done[o.item] = o.value
                else:
                    failed[o.item] = {"error": o.error, "attempts": o.attempts}
    ordered = [done[n] for n in names if n in done]
    total = EvalResult.sum_records(ordered, ls.class_names)
    summary = {"dataset": dataset, "root": ds.root, "split": bench.split, "labelset": ls.name,
               "source": "oracle" if bench.oracle else (bench.features or cfg.encoder.clip_model),
               "distilled": cfg.output.distilled, "scenes": len(names), "scenes_done": len(ordered),
               "scenes_failed": len(failed), "scenes_cached": len(names) - len(todo),
               "failed": failed, "executor": sc.executor, "workers": workers}
    if total is not None:
        j = total.to_json()
        summary.update(miou=j["miou"], macc=j["macc"], oacc=j["oacc"], coverage=j["coverage"],
                       num_points=j["num_points"], groups=group_scores(total, ls.groups),
                       per_class=j["per_class"], confusion=j["confusion"], class_names=j["class_names"])
        save_bar_chart(total, outp / "iou.png", title=f"{dataset} {bench.split} ({ls.title or ls.name}), "
                                                       f"{len(ordered)} scenes")
    else:
        summary.update(miou=None, macc=None, coverage=None)
    if cfg.instances.enabled:
        summary.update(split_instance_ap(outp, [r["scene"] for r in ordered], ls) or {})
    secs = [r["seconds"] for r in ordered]
    summary["per_scene"] = {"seconds_mean": round(float(np.mean(secs)), 3) if secs else None,
                            "peak_rss_mb_max": max((r.get("peak_rss_mb") or 0 for r in ordered), default=None),
                            "points_mean": round(float(np.mean([r["points"] for r in ordered])), 1) if ordered else None,
                            "views_mean": round(float(np.mean([r["views"] for r in ordered])), 1) if ordered else None}
    summary["scene_results"] = {r["scene"]: {k: r.get(k) for k in ("miou", "coverage", "points", "views",
                                                                     "seconds", "peak_rss_mb")} for r in ordered}
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["config"] = {"run": cfg.to_dict(), "bench": asdict(bench)}
    write_json(outp / "results.json", summary)
    write_text(outp / "results.md", results_markdown(summary))
    return summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


# --- report ---------------------------------------------------------------------------------------

def published_rows(dataset: str, labelset: str) -> list[dict]:
    """Published numbers for the same dataset and label set (data/published.json, with sources)."""
    try:
        rows = json.loads(PUBLISHED.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return []
    return [r for r in rows if r["dataset"] == dataset and r["labelset"] == labelset]


def results_markdown(s: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"# {s['dataset']} {s['split']} ({s['labelset']}): {s['scenes_done']} of {s['scenes']} scenes", "",
             f"2D source: {s['source']}" + (f"; distilled: {s['distilled']}" if s.get("distilled") else ""), "",
             "| method | mIoU | mAcc | coverage | note |", "|---|---|---|---|---|",
             f"| **pc_ovseg (this run)** | {pct(s.get('miou'))} | {pct(s.get('macc'))} | {pct(s.get('coverage'))} | "
             f"{s['scenes_done']} scenes |"]
    for r in (r for r in published_rows(s["dataset"], s["labelset"]) if "miou" in r):
        lines.append(f"| {r['method']} | {r.get('miou', '-')} | {r.get('macc', '-')} | - | {r['note']} ([source]({r['source']})) |")
    if s.get("instance_ap"):
        a, c = s["instance_ap"], s["instance_ap_class_agnostic"]
        lines += ["", "| instances | AP | AP50 | AP25 | note |", "|---|---|---|---|---|",
                  f"| **pc_ovseg (this run)** | {pct(a['ap'])} | {pct(a['ap50'])} | {pct(a['ap25'])} | "
                  f"{s['instance_scenes']} scenes, {len(s['instance_classes'])} classes |",
                  f"| pc_ovseg class-agnostic | {pct(c['ap'])} | {pct(c['ap50'])} | {pct(c['ap25'])} | proposals only |"]
        for r in (r for r in published_rows(s["dataset"], s["labelset"]) if "instance_ap" in r):
            lines.append(f"| {r['method']} | {r['instance_ap']} | - | - | {r['note']} ([source]({r['source']})) |")
    if s.get("groups"):
        lines += ["", "| group | mIoU | classes present |", "|---|---|---|"]
        lines += [f"| {g} | {pct(v['miou'])} | {v['classes_present']} / {v['classes']} |" for g, v in s["groups"].items()]
    if s.get("per_class"):
        lines += ["", "| class | IoU | acc | points |", "|---|---|---|---|"]
        lines += [f"| {n} | {pct(v['iou'])} | {pct(v['acc'])} | {v['support']} |"
                  for n, v in s["per_class"].items() if v["support"] or v["predicted"]]
    if s["failed"]:
        lines += ["", "## Failed scenes", ""] + [f"- {n}: {v['error']} ({v['attempts']} attempts)"
                                                 for n, v in s["failed"].items()]
    lines += ["", "Published numbers are the full official split; a partial run is not comparable with them.", ""]
    return "\n".join(lines)
