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

import pytest

import pc_ovseg.io as pio
from pc_ovseg.errors import InputError

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
EXPECTED: dict = json.loads((CORPUS / "expected.json").read_text())
# the subprocess imports the same pc_ovseg as this test (source tree or installed package)
PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]


def test_corpus_is_large_and_listed():
    assert len(EXPECTED) >= 40
    on_disk = {p.name for p in CORPUS.iterdir()} - {"make_corpus.py", "expected.json", "__pycache__", "m_img"}
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
    assert ei.value.path is not None and msg.startswith(ei.value.path)
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
