"""SIGTERM and SIGHUP end a command like Ctrl-C: the exception unwinds through every ``finally``, so temp files
and folders are removed, workers are stopped and a zoo summary is written. What ``timeout``, CI runners, Slurm
and Kubernetes send is therefore as safe as an interactive Ctrl-C.

One exception must not be raised mid-way: an import of a C extension. ``onnxruntime.tools`` and
``onnxruntime.quantization`` import torch when it is installed, and an interrupt raised inside torch's import
aborts the process (SIGABRT, temp folder left behind) or is swallowed (the command then ignores the signal and
exits 0). Such lazy imports go through :func:`import_deferred`, which holds the signal until the import ends;
it loads ``onnxruntime.tools`` first, as ORT's own functions import it (and so torch) lazily when called."""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, ModuleType


class Terminated(KeyboardInterrupt):
    """The process received a termination signal (``signum``); handled like KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a second signal must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only; elsewhere a no-op).
    The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block SIGINT, SIGTERM and SIGHUP are recorded, not acted on; the first one is delivered
    again when the block ends, to the handlers that were in place before (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in _HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def import_deferred(name: str) -> ModuleType:
    """Import module ``name`` with signals deferred, after ``onnxruntime.tools`` (which imports torch when it
    is installed: the import an interrupt must not cut)."""
    with signals_deferred():
        importlib.import_module("onnxruntime.tools")
        return importlib.import_module(name)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal number, as shells report it (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT)
