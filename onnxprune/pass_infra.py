"""The pass contract and the pass manager (after onnx-ir's passes and torch.fx's pass infrastructure).

A :class:`GraphPass` rewrites a ``gs.Graph`` and says whether it changed anything and, per candidate site,
what it did or why it did not (:class:`Finding`). The :class:`PassManager` runs a list of passes and, after
each one, the checks chosen by :class:`Checks`: ONNX checker, an ORT session, numeric comparison against the
input model (ORT graph optimizations disabled), and an optional dump of the intermediate model.
"""

from __future__ import annotations

import abc
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.errors import (
    OnnxPruneError,
    OutputPathError,
    PassError,
    VerificationError,
)
from onnxprune.graph import to_graph, to_model
from onnxprune.io import check_model, save_model
from onnxprune.paths import is_marked, mark
from onnxprune.verify import Comparison, InputSpec, Reference, make_session


@dataclass(frozen=True)
class Finding:
    """One candidate site a pass looked at: ``applied`` or skipped, with the reason in words."""

    node: str
    op: str
    applied: bool
    reason: str


@dataclass(frozen=True)
class PassResult:
    graph: gs.Graph
    modified: bool
    findings: tuple[Finding, ...] = ()


class GraphPass(abc.ABC):
    """A graph rewrite. Subclasses set ``name`` and implement :meth:`call`."""

    name: ClassVar[str]
    #: True when the pass can change tensor shapes (the manager then clears and re-infers them).
    changes_shapes: ClassVar[bool] = False
    #: True when the pass rewrites the graph it is given and returns it (the manager checks that it does).
    in_place: ClassVar[bool] = True

    def requires(self, graph: gs.Graph) -> None:
        """Precondition; raise PreconditionError with a reason when it does not hold."""

    @abc.abstractmethod
    def call(self, graph: gs.Graph) -> PassResult: ...

    def ensures(self, graph: gs.Graph) -> None:
        """Postcondition; raise VerificationError when it does not hold."""

    def __call__(self, graph: gs.Graph) -> PassResult:
        self.requires(graph)
        result = self.call(graph)
        self.ensures(result.graph)
        return result


class CheckLevel(enum.Enum):
    NONE = "none"            # no checks between passes (the final model is still checked)
    STRUCTURE = "structure"  # ONNX checker (full) + ORT session after each pass
    NUMERIC = "numeric"      # STRUCTURE + outputs compared with the input model after each pass


@dataclass(frozen=True)
class Checks:
    level: CheckLevel = CheckLevel.NONE
    #: numeric tolerance: max abs diff <= rel_tol * max |reference output|; None: by output dtype
    #: (1e-5 for float32/float64, 4e-3 for float16/bfloat16, i.e. a few units of rounding)
    rel_tol: float | None = None
    inputs: InputSpec = InputSpec(batch=2)
    seed: int = 0
    dump_dir: Path | None = None


@dataclass(frozen=True)
class PassRecord:
    name: str
    modified: bool
    findings: tuple[Finding, ...]
    seconds: float
    comparison: Comparison | None = None


@dataclass(frozen=True)
class PipelineResult:
    model: onnx.ModelProto
    records: tuple[PassRecord, ...] = field(default_factory=tuple)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for r in self.records for f in r.findings)

    @property
    def comparison(self) -> Comparison | None:
        """The last numeric comparison (the final model against the input), if numeric checks ran."""
        return next((r.comparison for r in reversed(self.records) if r.comparison is not None), None)


def default_tolerance(reference: Reference) -> float:
    """Relative tolerance for a numeric comparison: a few units of rounding of the coarsest output dtype."""
    low_precision = any(v.dtype.itemsize <= 2 and np.issubdtype(v.dtype, np.floating)
                        for v in reference.outputs.values())
    return 4e-3 if low_precision else 1e-5


def prepare_dump_dir(folder: Path) -> None:
    """Create (and mark) the ``--dump-dir`` folder; an existing one is used only when it is empty or onnxprune
    wrote it, since its files are overwritten."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not is_marked(folder))):
        raise OutputPathError(f"{folder}: `dump_dir` exists and was not written by onnxprune; choose a new or empty "
                              f"folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not is_marked(folder):
            mark(folder, "dump")
    except OSError as e:
        raise OutputPathError(f"{folder}: cannot create the `dump_dir` folder: {e.strerror or e}") from None


class PassInstrument:
    """Runs around the passes of a :class:`PassManager` (as TVM's ``PassInstrument`` or torch.fx's checks after
    each pass): ``start`` once with the input model, ``after_pass`` with the model after each pass that changed
    it (after every pass when ``every_pass``). May raise to stop the pipeline; may return a comparison."""

    every_pass: ClassVar[bool] = False

    def start(self, model: onnx.ModelProto) -> None:
        """Called once, before the first pass."""

    def after_pass(self, index: int, pass_name: str, model: onnx.ModelProto) -> Comparison | None:
        return None


class CheckerInstrument(PassInstrument):
    """The full ONNX checker on the model after each pass: VerificationError naming the pass."""

    def after_pass(self, index: int, pass_name: str, model: onnx.ModelProto) -> Comparison | None:
        try:
            check_model(model, f"after pass {pass_name}", full_check=True)
        except Exception as e:
            raise VerificationError(str(e)) from e
        return None


class SessionInstrument(PassInstrument):
    """An ONNX Runtime session is created from the model after each pass (it loads and is accepted)."""

    def after_pass(self, index: int, pass_name: str, model: onnx.ModelProto) -> Comparison | None:
        make_session(model)
        return None


class NumericInstrument(PassInstrument):
    """The outputs after each pass against the input model's on seeded inputs (ORT, optimizations off), by the
    tolerance rule (``rel_tol``, default :func:`default_tolerance`)."""

    def __init__(self, inputs: InputSpec, seed: int = 0, rel_tol: float | None = None) -> None:
        self.inputs, self.seed, self.rel_tol = inputs, seed, rel_tol
        self.reference: Reference | None = None

    def start(self, model: onnx.ModelProto) -> None:
        self.reference = Reference.of(model, self.inputs, self.seed)

    def after_pass(self, index: int, pass_name: str, model: onnx.ModelProto) -> Comparison | None:
        assert self.reference is not None, "start() first"
        comparison = self.reference.compare(model)
        rel_tol = self.rel_tol if self.rel_tol is not None else default_tolerance(self.reference)
        if not comparison.within(rel_tol):
            raise VerificationError(
                f"pass {pass_name} changed the outputs: max abs diff {comparison.max_abs_diff:.3g} on "
                f"{comparison.worst_output!r} exceeds {rel_tol:g} x max|output| "
                f"({comparison.max_abs_reference:.3g})")
        return comparison


class DumpInstrument(PassInstrument):
    """The model after every pass saved as ``NN-<pass>.onnx`` in ``folder`` (created and marked first)."""

    every_pass = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, model: onnx.ModelProto) -> None:
        prepare_dump_dir(self.folder)

    def after_pass(self, index: int, pass_name: str, model: onnx.ModelProto) -> Comparison | None:
        save_model(model, self.folder / f"{index + 1:02d}-{pass_name}.onnx")
        return None


def instruments_for(checks: Checks) -> list[PassInstrument]:
    """The instruments ``checks`` asks for: STRUCTURE = checker + ORT session; NUMERIC = checker + numeric
    comparison (which runs a session); ``dump_dir`` adds the dump."""
    out: list[PassInstrument] = []
    if checks.level is not CheckLevel.NONE:
        out.append(CheckerInstrument())
        out.append(NumericInstrument(checks.inputs, checks.seed, checks.rel_tol)
                   if checks.level is CheckLevel.NUMERIC else SessionInstrument())
    if checks.dump_dir is not None:
        out.append(DumpInstrument(checks.dump_dir))
    return out


class PassManager:
    """Runs passes in order on a model; the input ModelProto is never modified. ``checks`` (and any extra
    ``instruments``) run between the passes."""

    def __init__(self, passes: Sequence[GraphPass], checks: Checks = Checks(),
                 instruments: Sequence[PassInstrument] = ()) -> None:
        self.passes = list(passes)
        self.checks = checks
        self.instruments = [*instruments_for(checks), *instruments]

    def run(self, model: onnx.ModelProto, graph: gs.Graph | None = None) -> PipelineResult:
        """Run the passes on ``model``; ``graph`` may be given when the caller already imported it (it is
        then rewritten in place)."""
        for instrument in self.instruments:
            instrument.start(model)
        records: list[PassRecord] = []
        graph = to_graph(model) if graph is None else graph
        current: onnx.ModelProto | None = model  # None: the graph has changes not exported yet
        reinfer = False
        for index, graph_pass in enumerate(self.passes):
            start = time.perf_counter()
            before = tuple(p.name for p in self.passes[:index])
            try:
                result = graph_pass(graph)
            except (OnnxPruneError, KeyboardInterrupt, MemoryError):
                raise                       # already a one-line, user-facing reason (or not a failure of the pass)
            except Exception as e:          # a bug in the pass: say which one, and what ran before it
                raise PassError(graph_pass.name, before, e) from e
            if graph_pass.in_place and result.graph is not graph:
                raise PassError(graph_pass.name, before, TypeError(
                    "declared in_place but returned a different graph than the one it was given"))
            graph = result.graph
            changed = result.modified
            if changed:
                current = None
                reinfer = reinfer or graph_pass.changes_shapes
            due = [i for i in self.instruments if i.every_pass or changed]
            comparison = None
            if due:
                if current is None:
                    current, reinfer = to_model(graph, model, reinfer=reinfer), False
                for instrument in due:
                    comparison = instrument.after_pass(index, graph_pass.name, current) or comparison
            records.append(PassRecord(graph_pass.name, result.modified, result.findings,
                                      time.perf_counter() - start, comparison))
        if current is None:
            current = to_model(graph, model, reinfer=reinfer)
        return PipelineResult(current, tuple(records))
