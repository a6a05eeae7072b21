"""Ctrl-C and SIGTERM during training: ask the trainer to stop cleanly instead of dying mid-update.

The first SIGINT/SIGTERM only records a stop request; training stops at the next env step and saves a
resumable checkpoint.  A second signal raises ``KeyboardInterrupt`` at once, for a user who cannot wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a :class:`StopRequest` while the block runs (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be installed from the main thread
        return
    previous = {signum: signal.signal(signum, request._handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
