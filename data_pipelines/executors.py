"""Executors run a picklable ``processor(payload) -> result`` over many payloads, isolating failures.

* :class:`LocalExecutor` (default): a pool of long-lived worker processes (``spawn`` context). Each worker handles
  one payload at a time with a deadline. A worker that crashes (segfault in a decoder, ``os._exit``) or overruns its
  deadline is killed and replaced, its payload is reported failed with the reason, and the run goes on. Workers
  keep the processor between payloads, so models are loaded once per worker.
* :class:`RayExecutor` (``pip install 'seedkit[ray]'``): the same processor as Ray tasks, for a cluster; timeouts
  cancel the task, a dead Ray worker is reported like a crash.

Both yield :class:`TaskOutcome` objects in completion order.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator


@dataclass
class TaskOutcome:
    """What became of one payload.

    Attributes:
        key: the caller's key for the payload.
        ok: ``True`` when the processor returned; ``value`` holds its result.
        reason: when not ok: ``"timeout"``, ``"worker_crashed"`` or ``"exception"``.
        detail: human-readable detail (exit code, exception and traceback, elapsed time).
        seconds: wall time spent on the payload.
    """

    key: str
    ok: bool
    value: Any = None
    reason: str | None = None
    detail: str | None = None
    seconds: float = 0.0


def _worker_main(connection, processor: Callable[[Any], Any]) -> None:
    """Worker loop: receive ``(key, payload)``, send ``(key, ok, value_or_error)``; ``None`` means stop."""
    while True:
        try:
            message = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        key, payload = message
        try:
            result = (key, True, processor(payload))
        except Exception as error:  # noqa: BLE001 - reported to the parent, the worker stays alive
            result = (key, False, f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        connection.send(result)


class _Worker:
    def __init__(self, context, processor: Callable[[Any], Any]) -> None:
        self.connection, child_connection = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child_connection, processor), daemon=True)
        self.process.start()
        child_connection.close()
        self.key: str | None = None
        self.started = 0.0

    def submit(self, key: str, payload: Any) -> None:
        self.key, self.started = key, time.monotonic()
        self.connection.send((key, payload))

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=10)
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


class LocalExecutor:
    """A pool of ``workers`` processes with a per-payload ``timeout`` (seconds).

    >>> for outcome in LocalExecutor(workers=2, timeout=60).run(processor, [("a", payload_a), ("b", payload_b)]):
    ...     print(outcome.key, outcome.ok, outcome.reason)
    """

    def __init__(self, workers: int = 2, timeout: float = 600.0, start_method: str = "spawn") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self.workers = workers
        self.timeout = timeout
        self.context = multiprocessing.get_context(start_method)

    def run(self, processor: Callable[[Any], Any], tasks: Iterable[tuple[str, Any]]) -> Iterator[TaskOutcome]:
        pending = deque(tasks)
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        try:
            while pending or busy:
                # 1. keep every slot busy; a replaced worker is a fresh process
                while pending and len(busy) < self.workers:
                    worker = idle.pop() if idle else _Worker(self.context, processor)
                    key, payload = pending.popleft()
                    try:
                        worker.submit(key, payload)
                    except (BrokenPipeError, OSError) as error:
                        worker.kill()
                        yield TaskOutcome(
                            key, False, reason="worker_crashed", detail=f"could not send the task: {error}"
                        )
                        continue
                    busy.append(worker)
                # 2. wait for a result, a dead worker, or the nearest deadline
                now = time.monotonic()
                nearest = min(worker.started + self.timeout for worker in busy)
                ready = wait(
                    [w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=max(0.0, nearest - now)
                )
                now = time.monotonic()
                for worker in list(busy):
                    elapsed = now - worker.started
                    outcome = None
                    if worker.connection in ready or worker.process.sentinel in ready:
                        outcome = self._collect(worker, elapsed)
                    elif elapsed >= self.timeout:
                        worker.kill()
                        outcome = TaskOutcome(
                            worker.key, False, reason="timeout",
                            detail=(
                                f"no result after {elapsed:.1f} s (timeout {self.timeout:g} s); "
                                "worker killed and replaced"
                            ),
                            seconds=elapsed,
                        )
                    if outcome is None:
                        continue
                    busy.remove(worker)
                    if outcome.reason not in ("worker_crashed", "timeout"):
                        idle.append(worker)
                    yield outcome
        finally:
            for worker in busy:
                worker.kill()
            for worker in idle:
                worker.stop()

    @staticmethod
    def _collect(worker: _Worker, elapsed: float) -> TaskOutcome:
        key = worker.key
        try:
            if worker.connection.poll():
                _, ok, value = worker.connection.recv()
                if ok:
                    return TaskOutcome(key, True, value=value, seconds=elapsed)
                return TaskOutcome(key, False, reason="exception", detail=value, seconds=elapsed)
        except (EOFError, OSError):
            pass
        # The process ended without sending a result: a crash.
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        worker.kill()
        signal_note = f" (killed by signal {-code})" if code is not None and code < 0 else ""
        return TaskOutcome(
            key, False, reason="worker_crashed",
            detail=f"worker process exited with code {code}{signal_note} while processing; replaced",
            seconds=elapsed,
        )


class RayExecutor:
    """Run the processor as Ray tasks (``ray.init(**ray_init)``; on a cluster pass ``{"address": "auto"}``).

    Each payload is one task with ``num_cpus=1``; a task still running after ``timeout`` seconds is cancelled with
    ``force=True`` (its worker process is killed), a task whose worker died is reported as ``worker_crashed``.
    """

    def __init__(self, workers: int = 2, timeout: float = 600.0, ray_init: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError as error:
            raise ImportError(
                "the Ray executor needs ray: pip install 'seedkit[ray]' (or use executor='local')"
            ) from error
        self.ray = ray
        self.workers = workers
        self.timeout = timeout
        self.ray_init = dict(ray_init or {})

    def run(self, processor: Callable[[Any], Any], tasks: Iterable[tuple[str, Any]]) -> Iterator[TaskOutcome]:
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            options = {"num_cpus": self.workers, "include_dashboard": False, "log_to_driver": False}
            options.update(self.ray_init)
            ray.init(**options)

        @ray.remote(num_cpus=1, max_retries=0)
        def run_one(payload):
            return processor(payload)

        pending = deque(tasks)
        running: dict[Any, tuple[str, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    key, payload = pending.popleft()
                    running[run_one.remote(payload)] = (key, time.monotonic())
                nearest = min(started + self.timeout for _, started in running.values())
                done, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, nearest - time.monotonic()))
                now = time.monotonic()
                for reference in done:
                    key, started = running.pop(reference)
                    yield self._collect(reference, key, now - started)
                for reference, (key, started) in list(running.items()):
                    if now - started >= self.timeout:
                        ray.cancel(reference, force=True)
                        running.pop(reference)
                        yield TaskOutcome(
                            key, False, reason="timeout",
                            detail=(
                                f"no result after {now - started:.1f} s (timeout {self.timeout:g} s); "
                                "task cancelled"
                            ),
                            seconds=now - started,
                        )
        finally:
            for reference in running:
                ray.cancel(reference, force=True)
            if started_here:
                ray.shutdown()

    def _collect(self, reference, key: str, elapsed: float) -> TaskOutcome:
        ray = self.ray
        try:
            return TaskOutcome(key, True, value=ray.get(reference), seconds=elapsed)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.LocalRayletDiedError) as error:
            return TaskOutcome(key, False, reason="worker_crashed", detail=str(error).splitlines()[0], seconds=elapsed)
        except ray.exceptions.RayTaskError as error:
            return TaskOutcome(key, False, reason="exception", detail=str(error), seconds=elapsed)


def build_executor(kind: str, workers: int, timeout: float, ray_init: dict[str, Any] | None = None):
    """``"local"`` or ``"ray"`` executor."""
    if kind == "local":
        return LocalExecutor(workers=workers, timeout=timeout)
    if kind == "ray":
        return RayExecutor(workers=workers, timeout=timeout, ray_init=ray_init)
    raise ValueError(f"executor must be 'local' or 'ray', got {kind!r}")
