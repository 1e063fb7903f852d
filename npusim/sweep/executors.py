"""Where batches run: in this process, a local process pool (default), or a Ray cluster.

Each executor maps ``fn(ctx, batch) -> rows`` over batches and yields ``(batch_number, rows)`` as
batches finish, so the caller can write each one to disk at once (and resume after a kill).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator

PARENT_POLL_S = 0.5
"""How often a pool worker checks that its parent is still alive (the fallback to PR_SET_PDEATHSIG)."""


def default_workers() -> int:
    """Worker processes of the local pool: every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class SerialExecutor:
    """Runs batches one after another in this process (``--workers 1``; tests, profiling)."""

    name = "serial"

    def map(self, fn: Callable, ctx: dict, batches: Iterable[tuple[int, list]],
            group: Callable | None = None) -> Iterator[tuple[int, list]]:
        """Yield (batch number, rows) in order (``group`` changes nothing in one process)."""
        for n, batch in batches:
            yield n, fn(ctx, batch)

    def close(self, abort: bool = False) -> None:
        """Nothing to release."""


class LocalExecutor:
    """``workers`` worker processes (a one-process ``concurrent.futures`` pool each), so that batches of
    one group (e.g. one model shape) go to the same process and find its memos warm."""

    name = "local"
    WINDOW = 2
    """Batches queued per worker (one running, one waiting)."""

    def __init__(self, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self.pools = [ProcessPoolExecutor(max_workers=1, initializer=worker_init, initargs=(os.getpid(),))
                      for _ in range(workers)]

    def map(self, fn: Callable, ctx: dict, batches: Iterable[tuple[int, list]],
            group: Callable | None = None) -> Iterator[tuple[int, list]]:
        """Yield (batch number, rows) as batches complete. Consecutive batches of one ``group(batch)``
        form a run that one worker takes whole; a worker with no run left takes the last batch queued
        for the busiest other worker."""
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait

        runs = group_runs(batches, group)
        queued: list[deque] = [deque() for _ in self.pools]
        running: dict = {}
        load = [0] * len(self.pools)

        def take(w: int):
            if not queued[w] and runs:
                queued[w] = runs.popleft()
            if queued[w]:
                return queued[w].popleft()
            busiest = max(range(len(queued)), key=lambda i: len(queued[i]))
            return queued[busiest].pop() if queued[busiest] else None

        def top_up() -> None:
            """One batch to each worker with room, in turn, until none has room or none is left."""
            more = True
            while more:
                more = False
                for w, pool in enumerate(self.pools):
                    item = take(w) if load[w] < self.WINDOW else None
                    if item is not None:
                        running[pool.submit(_guarded, fn, ctx, item[1])] = (item[0], w)
                        load[w] += 1
                        more = True

        top_up()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: running[f][0]):
                n, w = running.pop(f)
                load[w] -= 1
                yield n, f.result()
            top_up()

    def close(self, abort: bool = False) -> None:
        """Shut the workers down: let running batches finish, or with ``abort`` (an interrupted sweep)
        cancel the queues and stop the workers at once."""
        for pool in self.pools:
            _close_pool(pool, abort)


def group_runs(batches: Iterable[tuple[int, list]], group: Callable | None):
    """The batches as a deque of runs (deques of consecutive batches of one group; without ``group``
    every batch is a run of its own)."""
    from collections import deque

    runs: deque = deque()
    last = object()
    for item in batches:
        key = group(item[1]) if group is not None else object()
        if not runs or key != last:
            runs.append(deque())
        runs[-1].append(item)
        last = key
    return runs


def _close_pool(pool, abort: bool) -> None:
    """Shut one process pool down (``LocalExecutor.close``)."""
    if not abort:
        pool.shutdown(cancel_futures=True)
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:  # SIGTERM: worker_init's handler exits at once, or just after sending a result
        try:
            p.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass
    for p in procs:
        p.join(timeout=5)
    if manager is not None:
        manager.join(timeout=10)


RAY_TASK_RETRIES = 3
"""Times Ray resubmits a batch whose worker died before it finished."""


class RayExecutor:
    """Ray tasks: joins ``address`` (or an already initialised Ray), else starts a local cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            from npusim.config.errors import ConfigError

            raise ConfigError("--executor", "executor", "ray", "ray is not installed",
                              "pip install 'npusim[ray]', or --executor local") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
            ray.init(log_to_driver=False, configure_logging=False, **kwargs)
            self.started = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # A task whose worker process dies (OOM kill, node loss) is resubmitted by Ray.
        self._remote = ray.remote(max_retries=RAY_TASK_RETRIES)(_call)

    def map(self, fn: Callable, ctx: dict, batches: Iterable[tuple[int, list]],
            group: Callable | None = None) -> Iterator[tuple[int, list]]:
        """Keep about two tasks per CPU in flight; yield each batch as it finishes (Ray places tasks
        itself: ``group`` is not used)."""
        ray = self.ray
        ctx_ref = ray.put(ctx)

        def finished(running):
            done, _ = ray.wait(list(running), num_returns=1)
            return [(ref, ray.get(ref)) for ref in done]

        yield from _windowed(lambda batch: self._remote.remote(fn, ctx_ref, batch), finished, batches,
                             2 * self.workers)

    def close(self, abort: bool = False) -> None:
        """Shut Ray down if this executor started it."""
        if self.started:
            self.ray.shutdown()


def _windowed(submit: Callable, finished: Callable, batches: Iterable[tuple[int, list]],
              window: int) -> Iterator[tuple[int, list]]:
    """Keep ``window`` submitted batches in flight; yield (batch number, rows) as ``finished`` reports
    handles done (a list of (handle, rows) for the handles that completed)."""
    todo = iter(batches)
    running: dict = {}

    def top_up() -> None:
        """Submit batches until the window is full or none are left."""
        while len(running) < window:
            item = next(todo, None)
            if item is None:
                return
            running[submit(item[1])] = item[0]

    top_up()
    while running:
        for handle, rows in finished(running):
            yield running.pop(handle), rows
        top_up()


_computing = False
"""True in a pool worker while it evaluates a batch (set by ``_guarded``)."""
TERM_GRACE_S = 1.0
"""A worker told to stop while not evaluating (it may be sending a result) exits this much later, so
the result pipe never holds half a message (which would hang the pool's reader)."""


def _guarded(fn: Callable, ctx: dict, batch: list) -> list:
    """Run one batch in a pool worker, marked as interruptible."""
    global _computing
    _computing = True
    try:
        return fn(ctx, batch)
    finally:
        _computing = False


def _on_term(signum, frame) -> None:
    """SIGTERM in a pool worker (the parent stopping the pool, or the parent's death): exit now while
    evaluating, else after TERM_GRACE_S."""
    if _computing:
        os._exit(128 + signum)
    import threading

    t = threading.Timer(TERM_GRACE_S, os._exit, args=(128 + signum,))
    t.daemon = True
    t.start()


def worker_init(parent: int) -> None:
    """Pool worker start-up: leave Ctrl-C to the parent (which stops the pool), exit on SIGTERM
    (``_on_term``), and die with the parent (``die_with_parent``)."""
    import signal

    from npusim.sweep.store import close_inherited_locks

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    close_inherited_locks()
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Make this process exit when ``parent`` (the sweep) dies, even by SIGKILL: on Linux the kernel sends
    SIGTERM (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread polls the parent and exits."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    first = os.getppid()

    def gone() -> bool:
        if os.getppid() != first:  # reparented: the process that started us is dead
            return True
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    if gone():
        os._exit(1)

    def watch() -> None:
        import time

        while not gone():
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="npusim-parent-watch", daemon=True).start()


def _call(fn: Callable, ctx: dict, batch: list) -> list:
    """Run one batch (the Ray task body)."""
    return fn(ctx, batch)


def make_executor(kind: str, workers: int | None = None, address: str | None = None):
    """The executor for ``--executor`` and ``--workers``."""
    if kind == "ray":
        return RayExecutor(address, workers)
    n = workers or default_workers()
    return SerialExecutor() if n <= 1 else LocalExecutor(n)
