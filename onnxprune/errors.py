"""Exception types. Every error the CLI reports is an :class:`OnnxPruneError`; its ``exit_code`` is the
process exit status (documented in README, "Exit codes")."""

from __future__ import annotations


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
