"""An output folder that appears whole or not at all: built in a temp folder beside it, then renamed.

The folder gets onnxprune's marker (:data:`onnxprune.paths.MARKER`); an existing folder is replaced only with
``force`` and only when it carries the marker, so a user's own folder is never deleted. A symlinked output path
is followed: the folder it points to is replaced and the link keeps pointing at it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onnxprune.errors import OutputPathError
from onnxprune.io import current_umask
from onnxprune.paths import check_destination, check_replaceable, make_folder, mark


def check_output_dir(path: Path, force: bool) -> Path:
    """The real output folder (symlinks followed), after checking it may be written; see the module doc."""
    real = Path(os.path.realpath(path))
    if not real.name:
        raise OutputPathError(f"{path}: cannot use the filesystem root as an output folder")
    check_destination(real.parent, path)
    check_replaceable(real, force)
    return real


@contextmanager
def staged_output_dir(path: Path, force: bool, command: str = "onnxprune") -> Iterator[Path]:
    """Yield a temp folder; on success it replaces ``path`` (the old one is removed only afterwards)."""
    real = check_output_dir(path, force)
    make_folder(real.parent, path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent))
    except OSError as e:
        raise OutputPathError(f"{path}: cannot create the output folder: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the result is an ordinary folder
        mark(tmp, command)
        yield tmp
        old = None
        if real.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".old", dir=real.parent))
            os.rmdir(old)
            os.replace(real, old)
        os.replace(tmp, real)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise OutputPathError(f"{path}: cannot write the output folder: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
