"""A private current folder for third-party code that writes into it.

ONNX Runtime's symbolic shape inference (run by its quantization pre-processing) saves
``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file into the current folder when it gives up, and follows
a symlink planted under that name. Such calls run inside :func:`private_cwd`: a fresh folder only this user can
enter, removed afterwards with everything in it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_cwd_lock = threading.RLock()  # the current folder is process-wide


@contextmanager
def private_cwd() -> Iterator[Path]:
    """Change into a new private temp folder for the block; back to the previous folder afterwards.

    Paths handed to the code inside must be absolute."""
    with _cwd_lock:
        previous = os.getcwd()
        folder = Path(tempfile.mkdtemp(prefix="onnxprune-cwd-"))
        try:
            os.chdir(folder)
            yield folder
        finally:
            os.chdir(previous)
            shutil.rmtree(folder, ignore_errors=True)
