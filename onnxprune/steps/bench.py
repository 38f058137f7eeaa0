"""The ``bench`` step: an interleaved latency comparison of model variants (see :mod:`onnxprune.benchmark`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from onnxprune.benchmark import BenchOptions, run_benchmark
from onnxprune.benchmark.report import write_outputs
from onnxprune.benchmark.runner import Provider
from onnxprune.errors import InvalidModelError, UsageError
from onnxprune.io import ensure_output_path
from onnxprune.progress import stage
from onnxprune.steps.base import DataOptions, Step, StepContext, StepResult, option
from onnxprune.steps.inputs import Merged, guard_paths, image_preprocess
from onnxprune.verify import parse_input_shapes


@dataclass(frozen=True)
class BenchStep(DataOptions, Step):
    """Time ``ctx.models`` (default: ``ctx.original`` then ``ctx.model``) interleaved; the first is the baseline.
    ``ctx.report`` gets the JSON results; ``csv``, ``markdown``, ``html``, ``plot`` more forms."""

    kind: ClassVar[str] = "bench"
    runs: int = 100
    seconds: float | None = None
    threads: str = "1"
    provider: str = option("cpu", choices=("cpu", "cuda"))   # a Provider
    batch: int = 1
    input_shape: tuple[str, ...] = ()
    csv: Path | None = None
    markdown: Path | None = None
    html: Path | None = None
    plot: Path | None = None

    def run(self, ctx: StepContext) -> StepResult:
        models = ctx.models or tuple(p for p in (ctx.original, ctx.model) if p is not None)
        try:
            threads = tuple(int(t) for t in self.threads.split(","))
            if any(t < 0 for t in threads):
                raise ValueError
        except ValueError:
            raise UsageError(f"`threads` {self.threads!r}: expected comma-separated integers, e.g. 1,2") from None
        outputs = {"json": ctx.report, "csv": self.csv, "markdown": self.markdown, "plot": self.plot,
                   "html": self.html}
        guard_paths(Merged({"models": models, **outputs}, self), inputs=("models", "data"), files=tuple(outputs))
        for path in outputs.values():
            if path is not None:
                ensure_output_path(path, *models)
        options = BenchOptions(runs=self.runs, seconds=self.seconds, threads=threads, provider=Provider(self.provider),
                               batch=self.batch, input_shapes=parse_input_shapes(list(self.input_shape)),
                               data=self.data, preprocess=image_preprocess(self), data_limit=self.limit)
        from onnxprune.benchmark.runner import providers_for

        providers_for(options.provider)  # fail early and clearly when CUDA is not there
        with stage(f"bench: {len(models)} models interleaved", total=len(threads) * options.runs,
                   unit="rounds") as progress:

            def advance(done: int, total: int) -> None:
                progress.total = total
                progress.advance(n=done - progress.done)

            results = run_benchmark([str(m) for m in models], options, advance)
        write_outputs(results, options, json_path=outputs["json"], csv_path=outputs["csv"],
                      markdown_path=outputs["markdown"], plot_path=outputs["plot"], html_path=outputs["html"])
        failed = [r for r in results if r.latency is None]
        second = results[1].speedup if len(results) > 1 else None
        report = {"models": [str(m) for m in models], "failed": sorted({r.path for r in failed}),
                  "latency_ratio": second.ratio if second else None}   # baseline / second model, medians
        return StepResult(self.kind, None, report, tuple(p for p in outputs.values() if p is not None),
                          details=results, exit_code=InvalidModelError.exit_code if failed else 0)

