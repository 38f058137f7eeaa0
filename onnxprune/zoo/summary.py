"""``OUTDIR/summary.csv``, ``.md`` and ``.json``: one row per model, totals at the end (written atomically)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from onnxprune.io import write_text_atomic
from onnxprune.zoo.model_run import Status

COLUMNS = ("name", "status", "error", "steps_done", "macs_before", "macs_after", "params_before", "params_after",
           "bytes_before", "bytes_after", "compressed_bytes", "latency_ratio", "seconds", "path")
OK = (Status.OK, Status.RESUMED)


def totals(rows: list[dict[str, object]], wall_seconds: float, backend: str, workers: int) -> dict[str, object]:
    count = {s.value: sum(1 for r in rows if r["status"] == s) for s in Status}
    ran = count["ok"] + count["failed"] + count["timeout"]
    good = [r for r in rows if r["status"] in OK]

    def total(key: str) -> int:
        return sum(int(r[key]) for r in good if r.get(key) is not None)

    return {"models": len(rows), **{k.replace(" ", "_"): v for k, v in count.items()},
            "backend": backend, "jobs": workers, "wall_seconds": wall_seconds,
            "models_per_minute": ran / wall_seconds * 60 if wall_seconds > 0 and ran else None,
            "bytes_before": total("bytes_before"), "bytes_after": total("bytes_after"),
            "macs_before": total("macs_before"), "macs_after": total("macs_after")}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_summary(outdir: Path, rows: list[dict[str, object]], summary: dict[str, object]) -> None:
    write_text_atomic(outdir / "summary.json", json.dumps({"totals": summary, "models": rows}, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in COLUMNS])
    w.writerow(["TOTAL", f"{summary['ok'] + summary['resumed']} ok / {summary['failed']} failed / "
                         f"{summary['timeout']} timeout / {summary['not_run']} not run", "", "",
                summary["macs_before"], summary["macs_after"], "", "", summary["bytes_before"], summary["bytes_after"],
                "", "", _cell(summary["wall_seconds"]), ""])
    write_text_atomic(outdir / "summary.csv", buf.getvalue())
    lines = ["# onnxprune zoo summary", "",
             f"{summary['models']} models: {summary['ok']} ok, {summary['resumed']} resumed, {summary['failed']} "
             f"failed, {summary['timeout']} timed out, {summary['not_run']} not run; backend {summary['backend']}, "
             f"{summary['jobs']} jobs, {summary['wall_seconds']:.1f} s"
             + (f" ({summary['models_per_minute']:.1f} models/min)" if summary["models_per_minute"] else "") + ".",
             "", "| model | status | steps | MACs before → after | params before → after | size before → after | "
             "compressed | latency ratio | s | error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def pair(a: str, b: str, scale: float = 1.0, unit: str = "") -> str:
            if r.get(a) is None:
                return ""
            after = "" if r.get(b) is None else f"{int(r[b]) / scale:.3g}{unit}"
            return f"{int(r[a]) / scale:.3g}{unit} → {after}"
        compressed = "" if r.get("compressed_bytes") is None else f"{int(r['compressed_bytes']) / 1e6:.3g} MB"
        lines.append(f"| {r['name']} | {r['status']} | {_cell(r.get('steps_done'))} | "
                     f"{pair('macs_before', 'macs_after', 1e6, 'M')} | {pair('params_before', 'params_after', 1e3, 'k')} | "
                     f"{pair('bytes_before', 'bytes_after', 1e6, ' MB')} | "
                     f"{compressed} | "
                     f"{_cell(r.get('latency_ratio'))} | {_cell(r.get('seconds'))} | "
                     f"{str(r.get('error') or '').replace('|', '/')} |")
    write_text_atomic(outdir / "summary.md", "\n".join(lines) + "\n")
