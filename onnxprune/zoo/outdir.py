"""A zoo's output folder: marked as onnxprune's, locked for the length of a run, with a private work area.

- OUTDIR must be new, empty, or a folder an earlier zoo run wrote (it carries :data:`~onnxprune.paths.MARKER`):
  a run never writes summaries or model folders over a user's own files.
- The marker file is also the lock (``flock``): a second run into the same OUTDIR, ``--resume`` or not, stops
  at once with a clear message instead of deleting the first one's work in progress.
- Models are built under ``OUTDIR/.onnxprune-work/`` (emptied at the start, removed at the end; only onnxprune
  ever writes there), then published by a rename. A folder the user named ``.work`` is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onnxprune.errors import OutputPathError
from onnxprune.paths import MARKER
from onnxprune.zoo.model_run import WORK_FOLDER


@contextmanager
def locked_outdir(outdir: Path) -> Iterator[Path]:
    """Create or reuse ``outdir`` (see the module rules), hold its lock, and yield it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None  # type: ignore[assignment]
    if outdir.exists() and not outdir.is_dir():
        raise OutputPathError(f"{outdir}: exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not (outdir / MARKER).is_file():
        raise OutputPathError(f"{outdir}: folder exists, is not empty and was not written by onnxprune zoo; "
                              f"choose a new or empty output folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        handle = open(outdir / MARKER, "a+")  # noqa: SIM115 - held open (and locked) for the whole run
    except OSError as e:
        raise OutputPathError(f"{outdir}: cannot write the output folder: {e.strerror or e}") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder(handle.read())
                raise OutputPathError(f"{outdir}: another onnxprune zoo run{holder} is writing to this folder; wait "
                                      f"for it to finish or choose another output folder") from None
        from onnxprune import __version__

        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"written_by": f"onnxprune {__version__}", "command": "zoo", "pid": os.getpid()})
                     + "\n")
        handle.flush()
        work = outdir / WORK_FOLDER
        shutil.rmtree(work, ignore_errors=True)  # an interrupted run's leftovers: ours, and the lock is held
        try:
            work.mkdir()
            yield outdir
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _holder(text: str) -> str:
    try:
        return f" (pid {int(json.loads(text)['pid'])})"
    except (ValueError, KeyError, TypeError):
        return ""
