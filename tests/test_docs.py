"""The README and the docs run as written (issue #19: the docs match the behaviour).

(a) README.md's ```python block is executed (``exec``) in a folder that holds
    ``out/sample_room/fused.npz``: a real result made first by ``pc-ovseg run`` on the ScanNet
    sample of the shared data, with the tiny random CLIP and two views, so the snippet's own paths
    work unchanged.
(b) Every ```bash block of README.md and docs/*.md whose opening line comes right after a line
    ``<!-- doctest -->`` is run by ``bash -e -o pipefail`` (so each of its commands must exit 0),
    in a fresh empty folder, with these environment variables (real variables, not text
    substitution: a reader who sets them can paste the block as it is):

        $SHARED   the shared sample data folder (../shared/data or $PC_OVSEG_SHARED_DATA)
        $OUT      a fresh empty folder for the block's outputs (also its working directory)
        $WEIGHTS  a tiny random CLIP checkpoint (pc_ovseg.encoders.make_tiny_clip_checkpoint),
                  used as ``--clip-model pcovseg-tiny-ViT --clip-weights $WEIGHTS``
        pc-ovseg  a wrapper first on PATH that runs ``python -m pc_ovseg`` with this interpreter,
                  so the package under test runs, as in the other CLI tests

    and OMP_NUM_THREADS=1 unless set: on a shared 2-core machine two spinning OpenMP threads
    made the tiny distill block take 25-100 s instead of a few seconds (docs/distill.md).

Mark a block only when it runs on the shared data in seconds and needs nothing else (no
pretrained weights, no browser, no network); all marked blocks together stay under ~2 minutes.
The README's set-up block is not marked: it downloads CLIP weights.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MARKER = "<!-- doctest -->"
DOC_FILES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md"))


def fenced_blocks(path: Path):
    """(opening line number, language, code, marked) of each fenced block of a markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        marked = start > 0 and lines[start - 1].strip() == MARKER
        yield start + 1, lang, "\n".join(lines[start + 1:j]) + "\n", marked
        i = j + 1


def marked_blocks():
    out = []
    for path in DOC_FILES:
        for line, lang, code, marked in fenced_blocks(path):
            if marked:
                out.append(pytest.param(path, line, lang, code, id=f"{path.relative_to(ROOT)}:{line}"))
    return out


MARKED = marked_blocks()


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doc_env(tmp_path_factory, shared_data):
    """Environment of the doc commands: $SHARED, $WEIGHTS and a `pc-ovseg` on PATH."""
    from pc_ovseg.encoders import make_tiny_clip_checkpoint

    root = tmp_path_factory.mktemp("docs")
    weights = root / "tiny_clip.pt"
    make_tiny_clip_checkpoint(weights)
    bindir = root / "bin"
    bindir.mkdir()
    wrapper = bindir / "pc-ovseg"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pc_ovseg "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = dict(os.environ)
    env.update(SHARED=str(shared_data), WEIGHTS=str(weights), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(args, env, cwd, timeout=300):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# -- the markers themselves ---------------------------------------------------------------------
def test_markers_precede_bash_blocks():
    """A marker that is not right before a ```bash block would silently test nothing."""
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for k, ln in enumerate(lines):
            if ln.strip() == MARKER:
                nxt = lines[k + 1] if k + 1 < len(lines) else ""
                assert nxt.strip() == "```bash", f"{path.name}:{k + 1}: {MARKER} must be followed by ```bash"
    files = {p.parent.name + "/" + p.name for p, *_ in (m.values for m in MARKED)}
    # the commands of the issue: info, render, run (+ --dump-config/--config), query, eval
    text = "".join(m.values[3] for m in MARKED)
    for cmd in ("pc-ovseg info", "pc-ovseg render", "pc-ovseg run", "--dump-config", "--config",
                "pc-ovseg query", "pc-ovseg eval"):
        assert cmd in text, f"no marked doc block runs {cmd!r}"
    assert len(files) >= 4, files


# -- (a) the README's Python snippet ------------------------------------------------------------
def readme_python() -> str:
    blocks = [code for _, lang, code, _ in fenced_blocks(ROOT / "README.md") if lang == "python"]
    assert len(blocks) == 1, f"README.md should hold one ```python block, has {len(blocks)}"
    return blocks[0]


def test_readme_python_snippet(doc_env, tmp_path, monkeypatch):
    code = readme_python()
    assert "out/sample_room/fused.npz" in code  # the path the set-up command writes
    shared = Path(doc_env["SHARED"])
    out = tmp_path / "out" / "sample_room"
    r = _run(["pc-ovseg", "run", shared / "scannet-scene0000" / "scene0000_00.bin", "--layout", "xyzrgb",
              "--labels", "wall,floor,ceiling,door,window,table,chair,sofa,cabinet,bed,lamp",
              "--clip-model", "pcovseg-tiny-ViT", "--clip-weights", doc_env["WEIGHTS"], "--max-views", "2",
              "--out", out, "--no-progress"], doc_env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "fused.npz").is_file()

    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md:python", "exec"), ns)  # noqa: S102 - our own README
    import numpy as np
    fc, heat, labels = ns["fc"], ns["heat"], ns["labels"]
    assert heat.shape == (len(fc.cloud),) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert labels.shape == (len(fc.cloud),) and labels.min() >= -1 and labels.max() < 4
    assert isinstance(ns["objects"], list)
    assert (tmp_path / "chairs.ply").is_file()


# -- (b) the marked shell blocks of the docs ----------------------------------------------------
@pytest.mark.parametrize("path,line,lang,code", MARKED)
def test_doc_commands(path, line, lang, code, doc_env, tmp_path):
    assert lang == "bash"
    out = tmp_path / "out"
    out.mkdir()
    env = dict(doc_env, OUT=str(out))
    t = time.perf_counter()
    r = _run(["bash", "-e", "-o", "pipefail", "-c", code], env, out)
    took = time.perf_counter() - t
    assert r.returncode == 0, (f"{path.name}:{line}: block exited {r.returncode} after {took:.1f} s\n"
                               f"--- block ---\n{code}--- stderr (tail) ---\n{r.stderr[-3000:]}\n"
                               f"--- stdout (tail) ---\n{r.stdout[-1500:]}")
    assert "internal error" not in r.stderr, r.stderr[-3000:]


def test_shared_data_paths_in_marked_blocks_exist(doc_env):
    """Each $SHARED/... path a marked block names is in the data folder (a renamed file would
    otherwise show up as a failing command far from its cause)."""
    shared = Path(doc_env["SHARED"])
    for p in MARKED:
        path, line, _, code = p.values
        for rel in re.findall(r"\$SHARED/([\w./-]+)", code):
            assert (shared / rel).exists(), f"{path.name}:{line}: $SHARED/{rel} not in {shared}"
