"""Executors: run one function over many units of work (benchmark scenes, city tiles) on this
machine or on a Ray cluster, with the same results.

The contract is small so every multi-unit stage uses the same one: ``setup()`` builds a worker's
state once (the 2D model, a loaded dataset), ``work(state, item)`` does one unit and writes its
own result files (so a lost worker loses only its unit), and the executor yields an
:class:`Outcome` per item as it finishes, retrying a failed item ``retries`` times. Both
callables must be picklable (module-level functions or ``functools.partial`` of them): worker
processes and Ray actors receive them by value.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import InputError, PcOvsegError
from .registry import Registry

EXECUTORS = Registry("executor_name")


def register_executor(name: str):
    return EXECUTORS.register(name)


@dataclass
class Outcome:
    """One item's result: ``value`` when ``ok``, else ``error`` (one line) after ``attempts`` tries."""

    item: Any
    ok: bool
    value: Any = None
    error: str = ""
    attempts: int = 1


def _attempt(work: Callable, state, item) -> tuple[bool, Any, str]:
    """Run one unit; a failure becomes a one-line message (bad input as the user sees it, a bug
    with its type and the last frame, so a report points at the line without a traceback)."""
    try:
        return True, work(state, item), ""
    except PcOvsegError as exc:
        return False, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a unit's bug must not stop the other units
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
        return False, None, f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


class _SetupFailed:
    """A worker whose setup raised: every item it is given fails with that one line."""

    def __init__(self, error: str):
        self.error = error


def _make_state(setup):
    if setup is None:
        return None
    ok, value, err = _attempt(lambda _s, _i: setup(), None, None)
    return value if ok else _SetupFailed(f"worker setup failed: {err}")


def _run(work, state, item) -> tuple[bool, Any, str]:
    if isinstance(state, _SetupFailed):
        return False, None, state.error
    return _attempt(work, state, item)


class Executor:
    """``map(work, items, setup=...)`` yields Outcomes in completion order."""

    executor_name: str
    workers: int = 1

    def map(self, work: Callable, items: Iterable, *, setup: Callable[[], Any] | None = None,
            retries: int = 1, progress: bool = True, desc: str = "items") -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _bar(total: int, progress: bool, desc: str, unit: str = "item"):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress)


# --- this machine ---------------------------------------------------------------------------------

_STATE: Any = None


def _init_worker(setup):
    global _STATE
    _STATE = _make_state(setup)


def _run_in_worker(work, item):
    return _run(work, _STATE, item)


@register_executor("local")
class LocalExecutor(Executor):
    """Items one after another in this process (``workers=1``), or over ``workers`` spawned
    processes, each running ``setup`` once. Spawned, not forked: torch and OpenMP state do not
    survive a fork safely."""

    def __init__(self, workers: int | None = 1, **_):
        self.workers = max(1, int(workers or 1))

    def map(self, work, items, *, setup=None, retries=1, progress=True, desc="items"):
        items = list(items)
        tries = {i: 0 for i in range(len(items))}
        bar = _bar(len(items), progress, desc)
        try:
            if self.workers == 1 or len(items) <= 1:
                state = _make_state(setup)
                for k, item in enumerate(items):
                    while True:
                        tries[k] += 1
                        ok, value, err = _run(work, state, item)
                        if ok or tries[k] > retries:
                            break
                    bar.update(1)
                    yield Outcome(item, ok, value, err, tries[k])
                return
            import concurrent.futures as cf
            import multiprocessing as mp
            with cf.ProcessPoolExecutor(min(self.workers, len(items)), mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker, initargs=(setup,)) as pool:
                pending = {pool.submit(_run_in_worker, work, it): k for k, it in enumerate(items)}
                for k in pending.values():
                    tries[k] = 1
                while pending:
                    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        k = pending.pop(fut)
                        try:
                            ok, value, err = fut.result()
                        except Exception as exc:  # noqa: BLE001 - a worker process died
                            ok, value, err = False, None, f"worker lost: {type(exc).__name__}: {exc}"
                        if not ok and tries[k] <= retries:
                            tries[k] += 1
                            pending[pool.submit(_run_in_worker, work, items[k])] = k
                            continue
                        bar.update(1)
                        yield Outcome(items[k], ok, value, err, tries[k])
        finally:
            bar.close()


# --- a Ray cluster ---------------------------------------------------------------------------------

def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(None, "--executor ray needs Ray: pip install 'pc_ovseg[ray]'") from None
    return ray


def _init_local_ray(ray, cpus: int, kw: dict) -> None:
    """A local cluster whose workers import the driver's pc_ovseg. Ray puts the driver's working
    directory on its workers' path, so a source checkout there (a clone under test, without its
    built extension) would shadow the installed package: start it from the package's own
    parent folder instead, and give the workers that folder."""
    import tempfile
    from ray.job_config import JobConfig
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = os.getcwd()
    try:
        os.chdir(tempfile.gettempdir())
        ray.init(num_cpus=cpus, job_config=JobConfig(_py_driver_sys_path=[pkg_parent]), **kw)
    finally:
        os.chdir(cwd)


class _Worker:
    """A Ray actor: holds the worker's state (the 2D model) across the items it is given."""

    def __init__(self, setup):
        self.state = _make_state(setup)

    def run(self, work, item):
        return _run(work, self.state, item)


@register_executor("ray")
class RayExecutor(Executor):
    """One actor per worker (``setup`` runs in its constructor, so the 2D model loads once per
    worker), one task per item, each actor given its next item as it finishes one. Connects to
    ``address`` (``ray.init(address=...)``, e.g. "auto" on a cluster node or ``ray://host:10001``)
    or starts a local cluster of ``workers`` CPUs. Each actor asks for ``gpus`` GPUs (default: 1
    when the cluster has any). A failed item is retried on another actor; an actor that dies
    (node lost, out of memory) is restarted by Ray and its item resubmitted."""

    def __init__(self, workers: int | None = None, *, address: str | None = None, gpus: float | None = None,
                 cpus: float = 1, **_):
        ray = _ray()
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kw)
            else:
                _init_local_ray(ray, workers or os.cpu_count(), kw)
            self._started = True
        else:
            self._started = False
        res = ray.cluster_resources()
        self.gpus = (1.0 if res.get("GPU", 0) >= 1 else 0.0) if gpus is None else float(gpus)
        avail = res.get("GPU", 0) / self.gpus if self.gpus else res.get("CPU", 1) / cpus
        self.workers = max(1, int(workers or avail))
        self.cpus = cpus

    def map(self, work, items, *, setup=None, retries=1, progress=True, desc="items"):
        ray = _ray()
        items = list(items)
        if not items:
            return
        actor_cls = ray.remote(_Worker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=2,
                                                max_task_retries=0)
        actors = [actor_cls.remote(setup) for _ in range(min(self.workers, len(items)))]
        queue = list(range(len(items)))
        tries = {k: 0 for k in queue}
        running: dict = {}  # object ref -> (item index, actor)

        def submit(actor):
            k = queue.pop(0)
            tries[k] += 1
            running[actor.run.remote(work, items[k])] = (k, actor)

        bar = _bar(len(items), progress, desc)
        try:
            for a in actors:
                if queue:
                    submit(a)
            while running:
                (ref,), _ = ray.wait(list(running), num_returns=1)
                k, actor = running.pop(ref)
                try:
                    ok, value, err = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the actor died (Ray restarts it)
                    ok, value, err = False, None, f"worker lost: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if not ok and tries[k] <= retries:
                    queue.insert(0, k)
                else:
                    bar.update(1)
                    yield Outcome(items[k], ok, value, err, tries[k])
                if queue:
                    submit(actor)
        finally:
            bar.close()
            for a in actors:
                ray.kill(a)

    def close(self) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False


def get_executor(name: str = "local", **kw) -> Executor:
    if name not in EXECUTORS:
        raise InputError(None, f"unknown executor {name!r} (known: {', '.join(EXECUTORS.names())})")
    return EXECUTORS[name](**kw)


# --- per-unit peak memory ---------------------------------------------------------------------------

def reset_peak_memory() -> None:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5), so each unit of work (a scene, a
    tile) run by a long-lived worker reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return round(int(ln.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None
