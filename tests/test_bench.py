"""bench: the statistics, the output formats, failure isolation, and the CUDA request without a GPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.zoo_cache import zoo_model
from onnxprune.benchmark import BenchOptions, Summary, paired_speedup, run_benchmark, speedup
from onnxprune.benchmark.stats import bootstrap_medians
from onnxprune.cli.main import main
from onnxprune.errors import InvalidModelError, UsageError

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


@pytest.mark.parametrize("true_ratio", [1.0, 1.5, 3.0])
def test_bootstrap_interval_covers_a_known_ratio(true_ratio):
    """Synthetic lognormal timings with a known ratio of medians: the 95% interval covers it nearly always."""
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(100):
        base = 0.010 * rng.lognormal(0.0, 0.2, 200)
        cand = 0.010 / true_ratio * rng.lognormal(0.0, 0.2, 200)
        s = speedup(base, cand, seed=trial)
        covered += s.low <= true_ratio <= s.high
        assert s.low <= s.ratio <= s.high
    assert covered >= 88


def test_paired_speedup_cancels_a_drift_both_runs_of_a_round_share():
    """A machine whose load drifts slows both runs of a round alike: the paired estimate's interval covers the
    true ratio and is far narrower than the ratio of medians' (which the drift widens); unequal series fall back."""
    rng = np.random.default_rng(1)
    drift = np.repeat(rng.choice([1.0, 1.4], 20), 10)          # busy stretches of 10 rounds
    covered, paired_width, unpaired_width = 0, [], []
    for trial in range(50):
        base = 0.010 * drift * rng.lognormal(0.0, 0.02, 200)
        cand = 0.005 * drift * rng.lognormal(0.0, 0.02, 200)
        p, u = paired_speedup(base, cand, seed=trial), speedup(base, cand, seed=trial)
        covered += p.low <= 2.0 <= p.high
        assert p.low <= p.ratio <= p.high
        paired_width.append(p.high - p.low)
        unpaired_width.append(u.high - u.low)
    assert covered >= 44 and np.median(paired_width) < 0.5 * np.median(unpaired_width)
    assert paired_speedup([0.01, 0.02, 0.03], [0.01, 0.02]) == speedup([0.01, 0.02, 0.03], [0.01, 0.02])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 31])
def test_order_statistic_bootstrap_draws_the_resampled_medians(n):
    """The O(resamples) bootstrap of the median has the distribution of medians of real resamples (odd and even
    n, where np.median averages the two middle values): their CDFs differ by < 0.01 everywhere (KS distance)."""
    x = np.random.default_rng(n).lognormal(0.0, 0.3, n)
    resampled = np.median(x[np.random.default_rng(1).integers(0, n, (100_000, n))], axis=1)
    drawn = bootstrap_medians(x, 100_000, np.random.default_rng(2))
    grid = np.union1d(resampled, drawn)
    cdf = [np.searchsorted(np.sort(v), grid, side="right") / len(v) for v in (resampled, drawn)]
    assert np.abs(cdf[0] - cdf[1]).max() < 0.01
    if n % 2:
        assert np.isin(drawn, x).all()                 # an odd resample's median is one of the values


def test_summary_percentiles():
    s = Summary.of(np.arange(1, 101) / 1000)
    assert (s.min_ms, s.n) == (1.0, 100) and s.p50_ms == pytest.approx(50.5) and s.p99_ms == pytest.approx(99.01)


def test_formats_and_failure_isolation(tmp_path, capsys):
    good = str(zoo_model("flatten_gemm", "legacy_bn"))
    other = str(zoo_model("flatten_gemm", "legacy"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    files = {f: tmp_path / f"out.{f}" for f in ("json", "csv", "markdown", "html")}
    argv = ["bench", good, other, str(broken), "--runs", "15", "--threads", "1,2"]
    for f, path in files.items():
        argv += [f"--{f}", str(path)]
    argv += ["--plot", str(tmp_path / "plot.png")]
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == InvalidModelError.exit_code          # reported as failed...
    assert "failed:" in out and "broken.onnx" in out  # ...with its error, while the others ran
    data = json.loads(files["json"].read_text())
    rows = data["results"]
    assert len(rows) == 6 and data["environment"]["runs"] == 15
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) == 4 and all(r["latency"]["n"] == 15 for r in ok)
    assert all(r["max_abs_diff"] < 1e-4 and r["rel_l2"] < 1e-5 for r in ok)
    assert all(r["top1_agreement"] is None for r in ok)            # top-1 agreement only on real data
    assert ok[0]["speedup"]["ratio"] == 1.0
    assert len(list(csv.reader(files["csv"].read_text().splitlines()))) == 7
    assert files["markdown"].read_text().count("\n|") >= 7
    page = files["html"].read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_with_labels_and_ort_files(tmp_path):
    from onnxprune.emission import EmitOptions, Target, emit

    emit(DIGITS / "studentnet.onnx", tmp_path / "mobile", EmitOptions(Target.MOBILE,
                                                                       input_shapes={"input": (1, 3, 32, 32)}))
    results = run_benchmark([str(DIGITS / "studentnet.onnx"), str(tmp_path / "mobile" / "model.ort")],
                            BenchOptions(runs=5, data=DIGITS / "digits_test.npz"))
    assert [r.error for r in results] == [None, None]
    assert results[0].accuracy == pytest.approx(0.9889, abs=1e-4)
    assert results[1].accuracy == results[0].accuracy and results[1].top1_agreement == 1.0


def test_unresolvable_inputs_ask_for_input_shape():
    results = run_benchmark([str(zoo_model("studentnet", "legacy_bn"))], BenchOptions(runs=2))
    assert results[0].latency is None and "`input_shape`" in results[0].error


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(capsys):
    rc = main(["bench", str(zoo_model("flatten_gemm", "legacy_bn")), "--provider", "cuda", "--runs", "2"])
    err = capsys.readouterr().err
    assert rc == UsageError.exit_code and "onnxruntime-gpu" in err and "\n" == err[-1] and err.count("\n") == 1
