"""The command corpus (tests/bad_inputs/commands/cases.json, written by make_corpus.py): broken
results, hostile checkpoints, empty vocabularies, out-of-range options and config files, each
given to a whole command. Every one must end with exit 2 and one stderr line saying what is
wrong (never an internal error, a traceback, a hang or a written result)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pc_ovseg

import pytest

HERE = Path(__file__).resolve().parent / "bad_inputs" / "commands"
CASES: dict = json.loads((HERE / "cases.json").read_text())
PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]


def test_corpus_covers_every_kind_of_bad_command_input():
    assert len(CASES) >= 60
    commands = {c["argv"][0] for c in CASES.values()}
    assert {"run", "query", "eval", "distill", "predict", "view", "render"} <= commands
    used = {a.split("/", 1)[1] for c in CASES.values() for a in c["argv"] if a.startswith("{C}/")}
    on_disk = {p.name for p in HERE.iterdir()} - {"cases.json"}
    assert on_disk <= used | {"fused_good.npz"}, f"files no case uses: {sorted(on_disk - used)}"


def _argv(case: dict, out: Path) -> list[str]:
    return [a.replace("{C}", str(HERE)).replace("{OUT}", str(out)) for a in case["argv"]]


def _in_process(argv: list[str]) -> tuple[int, str]:
    """``pc-ovseg ARGV`` in this process (torch imported once: the corpus runs in seconds); the
    CLI's silencing of warnings and logging is undone afterwards."""
    import contextlib
    import io
    import logging
    import warnings

    from pc_ovseg.cli import main
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
    logging.disable(logging.NOTSET)
    return rc, err.getvalue()


def _subprocess(argv: list[str]) -> tuple[int, str]:
    """Commands that would serve or block if a check were missing run with a timeout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PC_OVSEG_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "pc_ovseg", *argv], capture_output=True, text=True, timeout=120,
                       env=env, stdin=subprocess.DEVNULL)
    return r.returncode, r.stderr


def test_every_bad_command_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PC_OVSEG_DEBUG", raising=False)
    problems = []
    for k, (name, case) in enumerate(sorted(CASES.items())):
        out = tmp_path / f"out{k}"
        argv = _argv(case, out)
        rc, err = (_subprocess if argv[0] == "view" else _in_process)(argv)
        lines = err.strip().splitlines()
        written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        expect = case["expect"].lower()
        if not (rc == 2 and len(lines) == 1 and "Traceback" not in err and "internal error" not in err
                and expect in lines[0].lower() and not written):
            problems.append(f"{name}: rc={rc} written={len(written)} stderr={err.strip()[-300:]!r}")
    assert not problems, f"{len(problems)} of {len(CASES)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ["fused_good.npz"])
def test_the_good_result_of_the_corpus_is_good(name):
    from pc_ovseg.data import FeatureCloud
    assert len(FeatureCloud.load(HERE / name).cloud) == 64
