"""Executors: every item once, in any order; setup once per worker; retries; same outcomes
locally, over worker processes and on a local Ray cluster."""
from __future__ import annotations

import os
import sys
from functools import partial

import pytest

from pc_ovseg.errors import InputError
from pc_ovseg.executors import EXECUTORS, LocalExecutor, get_executor


def _setup(tag):
    return {"tag": tag, "pid": os.getpid()}


def _work(flaky_dir, state, item):
    """Squares ints; "bad" is bad input every time; "flaky" fails on its first try only (a
    marker file remembers the try across processes)."""
    if item == "bad":
        raise InputError("bad.ply", "not a cloud")
    if item == "flaky":
        marker = os.path.join(flaky_dir, "tried")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("transient")
        return ("flaky", state["tag"])
    return (item * item, state["pid"])


def _check(outcomes, tag="t"):
    by = {o.item: o for o in outcomes}
    assert sorted(map(str, by)) == sorted(map(str, [0, 1, 2, 3, "bad", "flaky"]))
    assert all(by[i].ok and by[i].value[0] == i * i and by[i].attempts == 1 for i in range(4))
    assert not by["bad"].ok and by["bad"].attempts == 2 and by["bad"].error == "bad.ply: not a cloud"
    assert by["flaky"].ok and by["flaky"].attempts == 2 and by["flaky"].value == ("flaky", tag)
    return by


def test_registry_and_unknown():
    assert {"local", "ray"} <= set(EXECUTORS)
    with pytest.raises(InputError, match="unknown executor 'slurm'"):
        get_executor("slurm")


def test_local_in_process(tmp_path):
    by = _check(list(LocalExecutor(1).map(partial(_work, str(tmp_path)), [0, 1, "bad", 2, "flaky", 3],
                                          setup=partial(_setup, "t"), progress=False)))
    assert {by[i].value[1] for i in range(4)} == {os.getpid()}


def test_local_processes_setup_once_per_worker(tmp_path):
    by = _check(list(LocalExecutor(2).map(partial(_work, str(tmp_path)), [0, 1, "bad", 2, "flaky", 3],
                                          setup=partial(_setup, "t"), progress=False)))
    pids = {by[i].value[1] for i in range(4)}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_no_retries(tmp_path):
    out = list(LocalExecutor(1).map(partial(_work, str(tmp_path)), ["flaky"], setup=partial(_setup, "t"),
                                    retries=0, progress=False))
    assert not out[0].ok and out[0].attempts == 1 and out[0].error.startswith("RuntimeError: transient (")


def test_ray_local_cluster(tmp_path):
    """Two actors on a local 2-CPU cluster: each runs setup once, items spread over both."""
    import ray
    import ray.cloudpickle as cp
    cp.register_pickle_by_value(sys.modules[__name__])   # this test module is not importable by workers
    with get_executor("ray", workers=2) as ex:
        assert ex.workers == 2 and ex.gpus == 0
        by = _check(list(ex.map(partial(_work, str(tmp_path)), [0, 1, "bad", 2, "flaky", 3],
                                setup=partial(_setup, "t"), progress=False)))
    assert os.getpid() not in {by[i].value[1] for i in range(4)}
    assert not ray.is_initialized()
