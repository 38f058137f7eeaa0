"""Bench results as a terminal table, JSON, CSV, markdown, PNG plots and a self-contained HTML report."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import platform
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort
from rich.table import Table

from onnxprune.benchmark.runner import BenchOptions, ModelResult
from onnxprune.errors import UsageError
from onnxprune.io import write_text_atomic

COLUMNS = ("model", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "speedup (95% CI)",
           "session s", "+mem MB", "file MB", "MACs", "params", "max|diff|", "rel L2", "top-1 agree", "accuracy")


def _name(r: ModelResult) -> str:
    return Path(r.path).name


def _cells(r: ModelResult) -> list[str]:
    if r.error and r.latency is None:
        return [_name(r), str(r.threads), f"failed: {r.error}"] + [""] * (len(COLUMNS) - 3)
    s, sp = r.latency, r.speedup

    def ms(x: float) -> str:
        return f"{x:.3f}"

    def opt(v, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    return [_name(r), str(r.threads), ms(s.p50_ms), ms(s.p90_ms), ms(s.p99_ms), ms(s.mean_ms), ms(s.std_ms), ms(s.min_ms),
            f"{sp.ratio:.2f} ({sp.low:.2f}–{sp.high:.2f})", opt(r.session_s, ".3f"), opt(r.memory_mb, ".1f"),
            opt(r.file_mb, ".2f"), "" if r.macs is None else f"{r.macs / 1e6:.1f}M",
            "" if r.params is None else f"{r.params / 1e6:.2f}M", opt(r.max_abs_diff, ".2g"), opt(r.rel_l2, ".2g"),
            "" if r.top1_agreement is None else f"{r.top1_agreement:.1%}",
            "" if r.accuracy is None else f"{r.accuracy:.2%}"]


TERMINAL = ("model", "threads", "p50 ms", "p90 ms", "p99 ms", "std ms", "speedup (95% CI)", "MACs", "file MB",
            "rel L2", "top-1 agree", "accuracy")


def table(results: list[ModelResult]) -> Table:
    """The terminal view: the columns that decide; failed models are listed under it."""
    t = Table(title="latency (interleaved); speedup vs the first model", show_lines=False)
    index = [COLUMNS.index(c) for c in TERMINAL]
    for c in TERMINAL:
        t.add_column(c.replace("threads", "thr"), justify="left" if c == "model" else "right", no_wrap=True)
    for r in results:
        if r.latency is not None:
            cells = _cells(r)
            t.add_row(*(cells[i] for i in index))
    return t


def environment(options: BenchOptions) -> dict[str, object]:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "provider": options.provider, "runs": options.runs,
            "seconds": options.seconds, "batch": options.batch, "cpu_count": __import__("os").cpu_count(),
            # what agreement and accuracy were measured on (max|diff| and rel L2: seeded random inputs)
            "data": None if options.data is None else str(options.data), "data_limit": options.data_limit}


def to_json(results: list[ModelResult], options: BenchOptions) -> str:
    rows = []
    for r in results:
        d = asdict(r)
        d.pop("times")
        rows.append(d)
    return json.dumps({"environment": environment(options), "results": rows}, indent=2) + "\n"


def to_csv(results: list[ModelResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "threads", "error", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "speedup",
                "speedup_low", "speedup_high", "session_s", "memory_mb", "file_mb", "macs", "params", "max_abs_diff",
                "rel_l2", "top1_agreement", "accuracy"])
    for r in results:
        s, sp = r.latency, r.speedup
        w.writerow([r.path, r.threads, r.error or "", *(("",) * 6 if s is None else
                                                          (s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.std_ms, s.min_ms)),
                    *(("",) * 3 if sp is None else (sp.ratio, sp.low, sp.high)), r.session_s, r.memory_mb, r.file_mb,
                    r.macs, r.params, r.max_abs_diff, r.rel_l2, r.top1_agreement, r.accuracy])
    return buf.getvalue()


def to_markdown(results: list[ModelResult], options: BenchOptions) -> str:
    env = environment(options)
    lines = [f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


def plot_png(results: list[ModelResult]) -> bytes:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("`plot` and `html` need matplotlib: pip install 'onnxprune[report]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.latency is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{_name(r)}\n{r.threads} thr" for r in ok]
    p50 = [r.latency.p50_ms for r in ok]
    err = [[r.latency.p50_ms - r.latency.min_ms for r in ok], [r.latency.p90_ms - r.latency.p50_ms for r in ok]]
    ax1.bar(range(len(ok)), p50, yerr=err, capsize=3, color="#4c72b0")
    ax1.set_xticks(range(len(ok)), labels, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("latency ms (bar p50, whiskers min..p90)")
    with_macs = [r for r in ok if r.macs]
    ax2.scatter([r.macs / 1e6 for r in with_macs], [r.latency.p50_ms for r in with_macs])
    for r in with_macs:
        ax2.annotate(_name(r), (r.macs / 1e6, r.latency.p50_ms), fontsize=7)
    ax2.set_xlabel("MACs (M)")
    ax2.set_ylabel("p50 latency ms")
    ax2.set_title("latency vs MACs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def to_html(results: list[ModelResult], options: BenchOptions) -> str:
    png = base64.b64encode(plot_png(results)).decode()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in results)
    env = html.escape(", ".join(f"{k} {v}" for k, v in environment(options).items()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>onnxprune bench</title><style>"
            f"body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;"
            f"padding:3px 6px;text-align:right}}</style></head><body><h1>onnxprune bench</h1><p>{env}</p>"
            f"<table><tr>{head}</tr>{rows}</table><img alt='plots' src='data:image/png;base64,{png}'></body></html>\n")


def write_outputs(results: list[ModelResult], options: BenchOptions, *, json_path: Path | None = None,
                  csv_path: Path | None = None, markdown_path: Path | None = None, plot_path: Path | None = None,
                  html_path: Path | None = None) -> None:
    if json_path:
        write_text_atomic(json_path, to_json(results, options))
    if csv_path:
        write_text_atomic(csv_path, to_csv(results))
    if markdown_path:
        write_text_atomic(markdown_path, to_markdown(results, options))
    if plot_path:
        tmp = plot_path.with_name(f".{plot_path.name}.tmp")
        tmp.write_bytes(plot_png(results))
        tmp.replace(plot_path)
    if html_path:
        write_text_atomic(html_path, to_html(results, options))
