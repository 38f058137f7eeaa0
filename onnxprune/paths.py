"""Which paths a command may read and write, checked before any work is done.

Rules (README, "Safety"):

- An input is a regular file (or, where a folder is expected, a folder): never a device, FIFO or socket, so
  ``/dev/zero`` or a named pipe is a one-line error instead of gigabytes read or a hang.
- No output is an input, no two outputs are the same path, no output file lies inside an input folder, and an
  output folder neither is, contains, nor lies inside a folder any input comes from (or the current folder).
- An existing output folder is replaced (``--force``, ``run``, zoo model folders) only when onnxprune wrote it:
  every folder onnxprune creates carries a :data:`MARKER` file; unknown files are never deleted.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from onnxprune.errors import InputFileError, OutputPathError

#: The file that marks a folder onnxprune wrote (and may replace).
MARKER = ".onnxprune"

PathLike = str | os.PathLike[str]


def regular_file(path: PathLike, what: str = "input") -> Path:
    """``path`` if it names an existing regular file; InputFileError otherwise (missing, folder, device...)."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise InputFileError(f"{p}: no such file") from None
    except OSError as e:
        raise InputFileError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise InputFileError(f"{p}: is a directory, expected {_article(what)} file")
    if not stat.S_ISREG(mode):
        raise InputFileError(f"{p}: not a regular file ({_kind(mode)}); expected {_article(what)} file")
    return p


def read_regular_file(path: PathLike, what: str = "input") -> bytes:
    """The bytes of a regular file. Opened without blocking and checked on the open descriptor, so a FIFO or a
    device swapped in after a check is refused rather than read forever."""
    p = regular_file(path, what)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InputFileError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise InputFileError(f"{p}: not a regular file ({_kind(mode)}); expected {_article(what)} file")
        try:
            return f.read()
        except OSError as e:
            raise InputFileError(f"{p}: cannot read {what}: {e.strerror or e}") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _article(what: str) -> str:
    return f"an {what}" if what[:1] in "aeiou" else f"a {what}"


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_paths(inputs: Iterable[PathLike | None] = (), files: Iterable[tuple[str, PathLike | None]] = (),
                folders: Iterable[tuple[str, PathLike | None]] = ()) -> None:
    """Refuse, before any work, outputs that could destroy an input or each other (see the module rules).

    ``inputs``: every file or folder the command reads (None entries are skipped); ``files`` / ``folders``:
    (option, path) of every file written / folder created or replaced.
    """
    ins = [(Path(p), _real(p)) for p in inputs if p is not None]
    in_folders = [real for _, real in ins if real.is_dir()]
    outs: list[tuple[str, Path, Path, bool]] = [(flag, Path(p), _real(p), False) for flag, p in files if p is not None]
    outs += [(flag, Path(p), _real(p), True) for flag, p in folders if p is not None]
    cwd = _real(os.getcwd())
    for flag, shown, real, is_folder in outs:
        for given, in_real in ins:
            if real == in_real or (real.exists() and in_real.exists() and os.path.samefile(real, in_real)):
                raise OutputPathError(f"{shown}: {flag} is also an input ({given}); inputs are never overwritten")
            if is_folder and _inside(in_real, real):
                raise OutputPathError(f"{shown}: output folder contains the input {given}; choose a folder apart "
                                      f"from the inputs")
        for folder in in_folders:
            if _inside(real, folder):
                raise OutputPathError(f"{shown}: {flag} would be written inside the input folder {folder}")
        if is_folder and _inside(cwd, real):
            raise OutputPathError(f"{shown}: output folder is (or contains) the current folder; choose a new one")
    for i, (flag, shown, real, _) in enumerate(outs):
        for other_flag, _, other, other_is_folder in outs[i + 1:]:
            if real == other or (other_is_folder and _inside(real, other)) or _inside(other, real):
                raise OutputPathError(f"{shown}: {flag} and {other_flag} name the same path; give each its own")


def check_destination(folder: Path, shown: PathLike) -> None:
    """``folder`` can be written into: it exists as a writable folder, or its nearest existing ancestor does (the
    missing folders are created when the output is written, as ``mkdir -p`` would)."""
    ancestor = Path(os.path.abspath(folder))
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{shown}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{shown}: folder {ancestor} is not writable")


def make_folder(folder: Path, shown: PathLike) -> None:
    """Create ``folder`` and any missing parents (OutputPathError when that fails)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{shown}: cannot create folder {folder}: {e.strerror or e}") from None


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` carries onnxprune's marker (onnxprune wrote it and may replace it)."""
    return (folder / MARKER).is_file()


def marked_by(folder: Path) -> str | None:
    """The command whose marker ``folder`` carries (``zoo`` for a zoo OUTDIR), or None when unmarked."""
    try:
        return str(json.loads((folder / MARKER).read_text()).get("command", ""))
    except (OSError, ValueError, AttributeError):
        return "" if is_marked(folder) else None


def mark(folder: Path, command: str) -> None:
    """Mark ``folder`` as written by onnxprune (``command``)."""
    from onnxprune import __version__

    (folder / MARKER).write_text(json.dumps({"written_by": f"onnxprune {__version__}", "command": command}) + "\n")


def check_replaceable(folder: Path, force: bool) -> None:
    """An output folder may be written when it is new or empty; an existing one is replaced only with ``force``
    and only when onnxprune wrote it (it carries the marker)."""
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder}: exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not force:
        raise OutputPathError(f"{folder}: folder exists and is not empty (use `force` to replace a folder "
                              f"onnxprune wrote)")
    if not is_marked(folder):
        raise OutputPathError(f"{folder}: folder exists and was not written by onnxprune (no {MARKER} marker); "
                              f"refusing to replace it: choose a new folder or empty it yourself")
