"""Ctrl-C and SIGTERM during training: ask the trainer to stop cleanly instead of dying mid-update.

The first SIGINT/SIGTERM only records a stop request; training stops at the next env step and saves a
resumable checkpoint.  A second signal raises ``KeyboardInterrupt`` at once, for a user who cannot wait.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by the signal handler; read by the training loop (see :class:`ctm_rl.callbacks.StopOnRequest`)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + the signal number."""
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        _record_worker_stop(signum, frame)


# In a pool worker (see detach_worker), a stop signal is for every run the worker has left: the running
# one stops with a checkpoint, a run that has not begun training yet stops at once or does not start.
_in_worker = False
_worker_stop: int | None = None


def _record_worker_stop(signum: int, frame: object) -> None:
    global _worker_stop
    if _in_worker:
        _worker_stop = signum


def worker_stop_requested() -> bool:
    """Whether this pool worker has been told to stop (always False outside a worker)."""
    return _worker_stop is not None


@contextlib.contextmanager
def _stop_signals_handled_by(handler: Callable[[int, object], None]) -> Iterator[None]:
    """``handler`` receives SIGINT/SIGTERM while the block runs; the previous handlers come back after.
    Off the main thread nothing is installed: signal handlers can only be installed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, restored in previous.items():
            signal.signal(signum, restored)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a :class:`StopRequest` while the block runs (main thread only)."""
    request = StopRequest()
    request.signum = _worker_stop
    with _stop_signals_handled_by(request._handle):
        yield request


@contextlib.contextmanager
def sigint_ignored(active: bool = True) -> Iterator[None]:
    """Ignore SIGINT while the block starts worker processes, so that they inherit the ignore.

    Ctrl-C reaches the whole process group: without this, ``SubprocVecEnv`` workers would die of it before
    the trainer could save a checkpoint.  Python keeps an inherited SIG_IGN for SIGINT at start-up.
    """
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def detach_worker() -> None:
    """Put this worker process in a session of its own (a pool's initializer calls it).

    Ctrl-C then reaches only the parent, which passes each worker exactly one stop signal
    (:func:`stop_workers_on_signals`): a second one would make the worker quit without its checkpoint.
    """
    global _in_worker
    _in_worker = True
    if hasattr(os, "setsid"):
        with contextlib.suppress(OSError):  # already a session leader
            os.setsid()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record_worker_stop)


@contextlib.contextmanager
def stop_workers_on_signals(cancel_queued: Callable[[], None]) -> Iterator[StopRequest]:
    """While a pool of :func:`detach_worker` processes trains: SIGINT/SIGTERM to this process cancels the
    queued work (``cancel_queued``) and sends every worker a SIGTERM, so that each running run stops at its
    next step with a resumable checkpoint.  A parent that died of the signal would leave its workers
    training, and starting the queued runs, on their own.  The block's :class:`StopRequest` says whether
    it happened."""
    request = StopRequest()

    def handle(signum: int, frame: object) -> None:
        request.signum = request.signum or signum
        cancel_queued()
        for worker in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)

    with _stop_signals_handled_by(handle):
        yield request
