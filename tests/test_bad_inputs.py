"""The bad-input corpus: every broken or hostile file gives one InputError line naming the file
and the problem, through the API and through ``pc-ovseg info`` (exit 2, one stderr line, no
traceback, no hang)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pc_ovseg

import numpy as np
import pytest

import pc_ovseg.io as pio
from pc_ovseg.errors import InputError, shown_path
from pc_ovseg.io._common import MAX_EXTENT

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
EXPECTED: dict = json.loads((CORPUS / "expected.json").read_text())
# the subprocess imports the same pc_ovseg as this test (source tree or installed package)
PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]


def test_corpus_is_large_and_listed():
    assert len(EXPECTED) >= 40
    on_disk = {p.name for p in CORPUS.iterdir()} - {"make_corpus.py", "expected.json", "__pycache__", "m_img", "commands"}
    listed = {k.split("/")[0] for k in EXPECTED}
    assert on_disk <= listed, f"files without an expectation: {sorted(on_disk - listed)}"
    for name, spec in EXPECTED.items():
        p = CORPUS / name
        assert spec.get("missing") or p.exists(), name
        if p.is_file():
            assert p.stat().st_size < 64 * 1024, f"{name} is not tiny"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_api_raises_one_line_input_error(name):
    spec = EXPECTED[name]
    path = str(CORPUS / name)
    fn = getattr(pio, spec["reader"])
    kwargs = {"layout": spec["layout"]} if "layout" in spec else {}
    with pytest.raises(InputError) as ei:
        obj = fn(path, **kwargs)
        for frame in getattr(obj, "cameras", []) and obj:  # sequences: pixels load lazily
            pass
    msg = str(ei.value)
    assert "\n" not in msg
    assert ei.value.path is not None and msg.startswith(shown_path(ei.value.path))
    # the path named is the input itself or a file inside it
    assert os.path.abspath(ei.value.path).startswith(os.path.abspath(path)) or \
        os.path.abspath(ei.value.path).startswith(str(CORPUS)), msg
    assert spec["expect"].lower() in msg.lower(), msg


def _cli(name: str) -> tuple[str, subprocess.CompletedProcess]:
    spec = EXPECTED[name]
    cmd = [sys.executable, "-m", "pc_ovseg", "info", str(CORPUS / name)]
    if "layout" in spec:
        cmd += ["--layout", spec["layout"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PC_OVSEG_DEBUG", None)
    return name, subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_cli_info_fails_cleanly_on_every_bad_input():
    # run the CLI on each file concurrently (each is one short process); timeout = no hang
    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(_cli, sorted(EXPECTED)))
    problems = []
    for name, r in results:
        lines = r.stderr.strip().splitlines()
        spec = EXPECTED[name]
        ok = (r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr
              and lines[0].startswith(f"pc-ovseg info: error: {CORPUS}") and not r.stdout.strip())
        # label files are not clouds: info rejects them with its own (still one-line) message
        if spec["reader"] != "read_labels":
            ok = ok and spec["expect"].lower() in lines[0].lower()
        if not ok:
            problems.append(f"{name}: rc={r.returncode} stderr={r.stderr.strip()[:300]!r}")
    assert not problems, "\n".join(problems)


def test_control_characters_in_a_path_stay_on_one_line(tmp_path):
    # a corpus file named with a newline would not survive every checkout (Windows, tar tools),
    # so these are made here: the message shows such a path repr-escaped, still one line
    assert str(InputError("/data/scan 1 é.ply", "x")) == "/data/scan 1 é.ply: x"  # ordinary: unchanged
    ply = "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    files = {"new\nline.ply": ply + "0 0 0\n1 1 1\n", "tab\there.pcd": "garbage\n",
             "bell\x07\r.npy": "not an array", "sep\u2028x.ply": ""}
    for name, body in files.items():
        p = tmp_path / name
        p.write_text(body)
        with pytest.raises(InputError) as ei:
            pio.read(str(p))
        msg = str(ei.value)
        assert ei.value.path == str(p) and msg.startswith(repr(str(p)) + ": "), msg
        assert len(msg.splitlines()) == 1 and msg.isprintable(), msg
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
        r = subprocess.run([sys.executable, "-m", "pc_ovseg", "info", str(p)], capture_output=True, text=True,
                           timeout=60, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and repr(str(p)) in lines[0], r.stderr


def test_georeferenced_las_still_reads(shared_data):
    # real offsets (UTM, state plane: 10^5..10^6 m) are the file's own: only the local extent counts
    for f in sorted((shared_data / "las").glob("*.las")):
        cloud = pio.read(str(f))
        assert len(cloud) and np.abs(cloud.xyz).max() < MAX_EXTENT, f


def test_near_misses_still_read(tmp_path):
    """What the stricter readers must keep accepting."""
    head = "ply\nformat {fmt} 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n{extra}end_header\n"
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4")
    # binary PLY padded with a few NUL bytes (less than a record)
    (tmp_path / "pad.ply").write_bytes(head.format(fmt="binary_little_endian", extra="").encode() + pts.tobytes() + bytes(4))
    assert len(pio.read(str(tmp_path / "pad.ply"))) == 3
    # a float label field holding whole numbers
    (tmp_path / "flab.ply").write_text(head.format(fmt="ascii", extra="property float label\n") + "0 0 0 1\n1 0 0 2\n0 1 0 -1\n")
    assert pio.read(str(tmp_path / "flab.ply")).fields["label"].tolist() == [1, 2, -1]
    # an organised PCD may have NaN labels where it has no point
    pcd = ("VERSION 0.7\nFIELDS x y z label\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 2\nHEIGHT 2\n"
           "POINTS 4\nDATA ascii\n0 0 1 3\nnan nan nan nan\n1 0 1 4\n0 1 1 5\n")
    (tmp_path / "org.pcd").write_text(pcd)
    assert pio.read(str(tmp_path / "org.pcd")).grid_shape == (2, 2)
    # a float64 cloud far from zero (ECEF-like) but compact: the origin takes the offset
    np.save(tmp_path / "far.npy", np.array([[6.37e6, 1.0, 2.0], [6.37e6 + 5, 3.0, 4.0]]))
    assert pio.read(str(tmp_path / "far.npy")).origin[0] > 6e6
