"""Progress of long work: a rich bar on a terminal, plain lines otherwise (logs, CI), nothing when quiet.

Library code reports through :func:`stage` without taking a parameter for it::

    with stage("lsq refit", total=len(layers), unit="layers") as s:
        for layer in layers:
            ...
            s.advance(layer.name)

The reporter is chosen once per command (:func:`reporting`); without one, stages cost nothing and print
nothing, so the Python API stays silent unless asked (``with reporting(Reporter.for_stream(sys.stderr)):``).
Non-terminal output is one line when a stage starts and one when it ends, with its duration::

    onnxprune: lsq refit: 53 layers
    onnxprune: lsq refit: done, 53 layers in 12.3 s
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Stage:
    """One stage of work: ``advance`` after each item (``detail`` names it on a terminal)."""

    def __init__(self, reporter: Reporter | None, name: str, total: int | None, unit: str) -> None:
        self.reporter, self.name, self.total, self.unit = reporter, name, total, unit
        self.done = 0
        self.start = time.perf_counter()
        self._task = None

    def advance(self, detail: str = "", n: int = 1) -> None:
        self.done += n
        if self.reporter is not None:
            self.reporter._advance(self, detail)

    def note(self, text: str, always: bool = False) -> None:
        """A line about an item (a model done, a step done): printed in line mode; on a terminal only when
        ``always`` (the bar shows the rest)."""
        if self.reporter is not None:
            self.reporter._note(text, always)


class Reporter:
    """Where stages are shown: a rich progress bar (terminal) or lines on ``stream``."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream, self.live = stream, live
        self._bar = None
        self._depth = 0

    @classmethod
    def for_stream(cls, stream: TextIO | None = None) -> Reporter:
        stream = stream or sys.stderr
        return cls(stream, live=bool(getattr(stream, "isatty", lambda: False)()))

    def _line(self, text: str) -> None:
        print(f"onnxprune: {text}", file=self.stream, flush=True)

    def _open(self, s: Stage) -> None:
        self._depth += 1
        size = f"{s.total} {s.unit}" if s.total is not None else ""
        if not self.live:
            if self._depth == 1:  # lines for the outermost stages only: inner ones would flood a log
                self._line(f"{s.name}: {size}" if size else f"{s.name} ...")
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                 console=Console(file=self.stream), transient=True)
            self._bar.start()
        s._task = self._bar.add_task(s.name, total=s.total, detail="")

    def _advance(self, s: Stage, detail: str) -> None:
        if self._bar is not None and s._task is not None:
            self._bar.update(s._task, completed=s.done, total=s.total, detail=detail)

    def _note(self, text: str, always: bool) -> None:
        if not self.live:
            self._line(text)
        elif always and self._bar is not None:
            self._bar.console.print(text, markup=False, soft_wrap=True)

    def _close(self, s: Stage, failed: bool) -> None:
        self._depth -= 1
        seconds = time.perf_counter() - s.start
        if self._bar is not None and s._task is not None:
            self._bar.remove_task(s._task)
            if self._depth == 0:
                self._bar.stop()
                self._bar = None
        if not self.live and not failed and self._depth == 0:
            count = f"{s.done} {s.unit} " if s.total is not None else ""
            self._line(f"{s.name}: done, {count}in {seconds:.1f} s")


_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("onnxprune_reporter", default=None)
_timings: contextvars.ContextVar[tuple[list[dict[str, object]], int] | None] = contextvars.ContextVar(
    "onnxprune_timings", default=None)
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("onnxprune_stage_depth", default=0)


@contextmanager
def timing() -> Iterator[list[dict[str, object]]]:
    """Collect ``{"stage", "seconds", "items"}`` for every outermost stage that ends inside the block (for
    reports; stages nested in them are part of their time)."""
    records: list[dict[str, object]] = []
    token = _timings.set((records, _depth.get()))
    try:
        yield records
    finally:
        _timings.reset(token)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Show the stages run inside the block on ``reporter`` (None: silent)."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "steps") -> Iterator[Stage]:
    """A stage of work shown by the current reporter (see the module doc); free when nothing reports."""
    reporter = _reporter.get()
    timings = _timings.get()
    depth = _depth.get()
    depth_token = _depth.set(depth + 1)
    s = Stage(reporter, name, total, unit)
    if reporter is not None:
        reporter._open(s)
    failed = True
    try:
        yield s
        failed = False
    finally:
        _depth.reset(depth_token)
        if reporter is not None:
            reporter._close(s, failed)
        if timings is not None and not failed and depth == timings[1]:
            timings[0].append({"stage": name, "seconds": round(time.perf_counter() - s.start, 3), "items": s.done})
