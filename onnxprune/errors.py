"""Exception types. Every error the CLI reports is an :class:`OnnxPruneError`; its ``exit_code`` is the
process exit status (documented in README, "Exit codes").

Messages name options by their Python keyword in backticks (```max_drop` needs data```), never as a command-line
flag: the library is used from Python, recipes and the CLI alike. :func:`option_text` renders them for each: the
CLI shows ``--max-drop``, a recipe or zoo row ``max-drop``, Python keeps ```max_drop```."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

#: An option named in a message: a lower-case Python identifier in backticks.
_OPTION = re.compile(r"`([a-z][a-z0-9_]*)`")


class OptionStyle(StrEnum):
    """How :func:`option_text` writes an option named in a message."""

    PYTHON = "python"   # `max_drop` (as written)
    FLAG = "flag"       # --max-drop
    KEY = "key"         # max-drop (a recipe or manifest key)


def option_text(message: str, style: OptionStyle, renamed: Mapping[str, str] | None = None) -> str:
    """``message`` with each ```option``` written in ``style``; ``renamed`` maps a keyword to its flag/key name
    where they differ (``global_ranking`` -> ``global``)."""
    if style is OptionStyle.PYTHON:
        return message

    def name(m: re.Match[str]) -> str:
        key = (renamed or {}).get(m.group(1)) or m.group(1).replace("_", "-")
        return f"--{key}" if style is OptionStyle.FLAG else key
    return _OPTION.sub(name, message)


class OnnxPruneError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(OnnxPruneError):
    """The command line asks for something inconsistent (e.g. a rewriting command without ``-o``)."""

    exit_code = 2


class InputFileError(OnnxPruneError):
    """The input path is missing, a directory, unreadable or empty."""

    exit_code = 3


class InvalidModelError(OnnxPruneError):
    """The file is not a valid ONNX model (not protobuf, truncated, cyclic, inconsistent weights...)."""

    exit_code = 4


class ExternalDataError(InvalidModelError):
    """Tensor data stored outside the model file is missing or unreadable."""


class UnsupportedModelError(OnnxPruneError):
    """A valid model that onnxprune does not handle (e.g. an opset outside the supported range)."""

    exit_code = 5


class OutputPathError(OnnxPruneError):
    """The output cannot be written: missing folder, same path as the input, not writable."""

    exit_code = 6


class VerificationError(OnnxPruneError):
    """A rewritten model failed a check: ONNX checker, ORT session creation, or numeric comparison."""

    exit_code = 7


class PreconditionError(OnnxPruneError):
    """A pass's precondition does not hold for this graph."""

    exit_code = 8


class PassError(OnnxPruneError):
    """A graph pass failed with an unexpected error (a bug, not a property of the model): names the pass and the
    passes that ran before it; the original exception is ``__cause__``. Exit 1, as any internal error."""

    exit_code = 1

    def __init__(self, pass_name: str, before: tuple[str, ...], cause: BaseException) -> None:
        self.pass_name, self.before = pass_name, before
        after = f" (after {', '.join(before)})" if before else " (the first pass)"
        super().__init__(f"pass {pass_name} failed{after}: {type(cause).__name__}: "
                         f"{' '.join(str(cause).split())[:300]}")


class ResourceLimitError(OnnxPruneError):
    """The work needs more memory than this process can allocate (checked before allocating)."""

    exit_code = 10
