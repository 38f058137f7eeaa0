"""Fine-tuning after pruning: held-out accuracy of {no recovery, lsq, lsq + finetune} at -50% and -70% MACs.

Each variant runs through the CLI as a user would: ``prune --target-flops F --round-to 8`` (``--recover lsq
--data CALIB``), then ``finetune --teacher ORIGINAL --data TRAIN --epochs E``. Data:

- digits models (StudentNet, VGG-16-BN, ResNet-56): TRAIN = the models' own training split (1347 images,
  ``models.train_digits.load_digits_split``); scored on the 450-image test split, never seen in training;
- hard models (``models/hard``): TRAIN = ``--hard-train`` samples drawn from the training generator (seed 1, the
  seed the models were trained on); scored on the test split (seed 3).

No ``--eval-data`` is given: the test split is only scored, never used to choose weights; the last weights are
written. Fine-tuning seconds are wall time on this machine, ``--threads`` torch threads.

Deep Compression on the digits VGG-16-BN (``--dc-sparsities``, ``--dc-per-layer``): ``compress --sparsity S
--data CALIB`` (lsq refit, ``--dc-conv-bits`` conv / 5-bit fc codebooks), without and with ``--finetune-epochs E
--finetune-data TRAIN --prune-steps K``: container ratio and test accuracy, the ratio-accuracy curve with and
without retraining.

Usage: python -m benchmarks.bench_finetune [--models ...] [--targets 0.5,0.3] [--epochs 5] [--out DIR]
Writes finetune.json and finetune.md (``--name`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_hard import cli
from benchmarks.bench_hard import score as hard_score
from benchmarks.common import machine

ROOT = Path(__file__).resolve().parents[1]
DIGITS, HARD = ROOT / "models" / "digits", ROOT / "models" / "hard"
MODELS = ("studentnet", "vgg16_bn", "resnet56", "glyphs", "textline")
VARIANTS = ("tp", "none", "lsq", "lsq+finetune", "cycles")


def digits_score(path: Path) -> dict[str, float]:
    import onnxruntime as ort

    data = np.load(DIGITS / "digits_test.npz")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": data["input"]})[0]
    return {"accuracy": float((out.argmax(1) == data["labels"]).mean())}


def training_split(name: str, tmp: Path, hard_samples: int) -> Path:
    path = tmp / f"{name}_train.npz"
    if name in ("glyphs", "textline"):
        from models.train_hard import TASKS, TRAIN_SEED

        x, labels = TASKS[name].generate(hard_samples, TRAIN_SEED)
    else:
        from models.train_digits import load_digits_split

        x, labels, _, _ = load_digits_split()
    np.savez(path, input=x.astype(np.float32), labels=labels)
    return path


def torch_pruning_kd(name: str, target: float, train: Path, epochs: float, threads: int) -> dict[str, object]:
    """The anchor: Torch-Pruning's group L1 on the same PyTorch module at the same MACs, then the same distillation
    budget in plain PyTorch (KD T=4 + cross-entropy, alpha 0.5, Adam 1e-3 cosine, batch 32, BatchNorm training
    as usual)."""
    import torch
    import torch.nn.functional as F

    from benchmarks.bench_recover import torch_pruning_at
    from models.train_digits import evaluate_torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    data = np.load(train)
    x, y = torch.from_numpy(data["input"].astype(np.float32)), torch.from_numpy(data["labels"])
    test = np.load(DIGITS / "digits_test.npz")
    try:
        teacher, student, kept = torch_pruning_at(name, 1 - target, x[:1])
    except Exception as e:  # noqa: BLE001 - Torch-Pruning's failure is a result here
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    row: dict[str, object] = {"macs_kept": round(kept, 4), "tp_pruned": evaluate_torch(student, test["input"],
                                                                                        test["labels"])}
    steps = round(epochs * (len(x) // 32))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    order, cursor = rng.permutation(len(x)), 0
    for _ in range(steps):
        if cursor + 32 > len(order):
            order, cursor = rng.permutation(len(x)), 0
        index = torch.from_numpy(np.sort(order[cursor:cursor + 32]))
        cursor += 32
        student.train()
        with torch.no_grad():
            soft = teacher(x[index])
        logits = student(x[index])
        kd = F.kl_div(F.log_softmax(logits / 4, 1), F.log_softmax(soft / 4, 1), log_target=True,
                      reduction="batchmean") * 16
        loss = 0.5 * kd + 0.5 * F.cross_entropy(logits, y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    student.eval()
    row.update(accuracy=evaluate_torch(student, test["input"], test["labels"]),
               finetune_seconds=round(time.perf_counter() - start, 2), steps=steps)
    return row


#: Han et al.'s recipe for VGG-16 (ICLR 2016, table 4) transposed to the digits VGG-16-BN: the small early layers
#: and the last classifier pruned least, the 128-channel 3x3 stack (80% of the weights) most.
PER_LAYER = ("*/features.0/*=0.5,*/features.3/*=0.6,*/features.7/*=0.7,*/features.10/*=0.7,*/features.14/*=0.85,"
             "*/features.17/*=0.85,*/features.20/*=0.85,*/features.24/*=0.93,*/classifier.0/*=0.9,"
             "*/classifier.3/*=0.5,*=0.975")


def deep_compression(args: argparse.Namespace, tmp: Path) -> list[dict[str, object]]:
    src, calib = DIGITS / "vgg16_bn.onnx", DIGITS / "digits_calib.npz"
    train = training_split("vgg16_bn", tmp, 0)
    rows = []
    settings = [(bits, s) for bits in args.dc_conv_bits.split(",") for s in args.dc_sparsities.split(",")]
    if args.dc_per_layer:
        settings += [(bits, "per-layer") for bits in args.dc_conv_bits.split(",")]
    for bits, sparsity in settings:
        if sparsity == "per-layer":
            *specific, rest = args.dc_per_layer.split(",")
            pruning = ["--sparsity", rest.split("=")[1]] + [a for spec in specific for a in ("--sparsity-for", spec)]
        else:
            pruning = ["--sparsity", sparsity]
        for retrain in (False, True):
            container, restored, report = tmp / "dc.onnxz", tmp / "dc.onnx", tmp / "dc.json"
            start = time.perf_counter()
            cli("compress", str(src), "-o", str(container), *pruning, "--conv-bits", bits, "--data", str(calib),
                "--report", str(report), *(["--finetune-epochs", str(args.dc_epochs), "--finetune-data", str(train),
                                            "--prune-steps", str(args.dc_prune_steps)] if retrain else []))
            seconds = round(time.perf_counter() - start, 1)
            cli("decompress", str(container), "-o", str(restored))
            r = json.loads(report.read_text())
            kept = sum(x["nonzero"] for x in r["layers"]) / sum(x["weights"] for x in r["layers"])
            row = {"pruning": sparsity, "sparsity": round(1 - kept, 4), "conv_bits": int(bits),
                   "retraining": "yes" if retrain else "no", "ratio": r["ratio"], "seconds": seconds,
                   **digits_score(restored)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default="0.5,0.3", help="MACs kept (0.5: -50%%, 0.3: -70%%)")
    parser.add_argument("--epochs", type=float, default=5.0, help="digits fine-tuning epochs")
    parser.add_argument("--hard-epochs", type=float, default=3.0, help="hard models' fine-tuning epochs")
    parser.add_argument("--hard-train", type=int, default=4096, help="training samples for the hard models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="tp: Torch-Pruning + KD (digits only); cycles: prune --schedule iterative --steps 2 "
                             "--finetune-epochs E (prune-retrain cycles, the same total budget)")
    parser.add_argument("--dc-sparsities", default="0.9,0.95,0.97", help="Deep Compression curve ('' to skip)")
    parser.add_argument("--dc-epochs", type=float, default=8.0, help="retraining epochs (half masked, half codebooks)")
    parser.add_argument("--dc-conv-bits", default="5", help="conv codebook bits, comma-separated (fc: 5)")
    parser.add_argument("--dc-prune-steps", type=int, default=3, help="compress --prune-steps with retraining")
    parser.add_argument("--dc-per-layer", default=PER_LAYER,
                        help="a per-layer row: GLOB=S,... (last one the default) ('' to skip)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="finetune", help="results file stem (default finetune)")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in filter(None, args.models.split(",")):
            hard = name in ("glyphs", "textline")
            src = (HARD if hard else DIGITS) / f"{name}.onnx"
            calib = HARD / f"{name}_calib.npz" if hard else DIGITS / "digits_calib.npz"
            score = (lambda p, n=name: hard_score(p, n)) if hard else digits_score
            shape = {"textline": "input=1x1x32x128", "glyphs": "input=1x1x32x32"}.get(name, "input=1x3x32x32")
            start = time.perf_counter()
            train = training_split(name, tmp, args.hard_train)
            print(json.dumps({"model": name, "train_split_seconds": round(time.perf_counter() - start, 1)}),
                  flush=True)
            original = score(src)
            rows.append({"model": name, "target": 1.0, "variant": "original", **original})
            epochs = args.hard_epochs if hard else args.epochs
            for target in args.targets.split(","):
                variants = args.variants.split(",")
                if not hard and "tp" in variants:
                    row = {"model": name, "target": float(target), "variant": "Torch-Pruning L1 + KD (PyTorch)",
                           "epochs": epochs, **torch_pruning_kd(name, float(target), train, epochs, args.threads)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                for variant in [v for v in VARIANTS if v in variants and v != "tp"]:
                    out = tmp / f"{name}-{target}-{variant}.onnx"
                    row: dict[str, object] = {"model": name, "target": float(target), "variant": variant}
                    t0 = time.perf_counter()
                    if variant == "cycles":
                        report = tmp / f"{name}-{target}-cycles.json"
                        cli("prune", str(src), "-o", str(out), "--target-flops", target, "--round-to", "8",
                            "--input-shape", shape, "--recover", "lsq", "--data", str(calib), "--finetune-epochs",
                            str(epochs), "--finetune-data", str(train), "--schedule", "iterative", "--steps", "2",
                            "--report", str(report))
                        rounds = json.loads(report.read_text())["rounds"]
                        row.update(epochs=epochs, steps=sum(r["finetune_steps"] for r in rounds),
                                   finetune_seconds=round(sum(r["finetune_seconds"] for r in rounds), 2))
                    elif variant == "lsq+finetune":
                        lsq = tmp / f"{name}-{target}-lsq.onnx"
                        report = tmp / f"{name}-{target}.json"
                        cli("finetune", str(lsq), "-o", str(out), "--teacher", str(src), "--data", str(train),
                            "--epochs", str(epochs), "--threads", str(args.threads), "--report", str(report))
                        r = json.loads(report.read_text())
                        row.update(epochs=epochs, steps=r["steps"], finetune_seconds=r["seconds"],
                                   train_samples=len(np.load(train)["labels"]))
                    else:
                        cli("prune", str(src), "-o", str(out), "--target-flops", target, "--round-to", "8",
                            "--input-shape", shape, *(["--recover", "lsq", "--data", str(calib)]
                                                      if variant == "lsq" else []))
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    row.update(score(out))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        dc_rows = deep_compression(args, tmp) if args.dc_sparsities else []
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"machine": machine(), "rows": rows, "deep_compression": dc_rows},
                                                       indent=2) + "\n")
    lines = ["# Fine-tuning after pruning (held-out test splits)", "",
             f"Command: `python -m benchmarks.bench_finetune{' ' + ' '.join(argv) if argv else ''}`  ",
             f"Machine: {machine()}", "",
             (f"`prune --target-flops F --round-to 8` (lsq on the calibration split), then `finetune --teacher "
             f"ORIGINAL --data TRAIN` (KD T=4 + cross-entropy/CTC, Adam at relative lr 1e-2 with warmup, cosine, batch 32, "
             f"{args.threads} torch threads; no --eval-data: the last weights). Digits: {args.epochs:g} epochs on the "
             f"1347-image training split, 450 test images. Hard models: {args.hard_epochs:g} epochs on "
             f"{args.hard_train} generated training samples; glyphs 1000 test images (top-1), textline 600 test "
             f"lines (exact-line accuracy, CER)."), "",
             ("| model | MACs kept | variant | accuracy / line accuracy | CER | fine-tune steps | fine-tune s | "
             "step s |"), "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['target']:.0%} | {r['variant']} | fails: {r['error']} | | | | |")
            continue
        acc = r.get("accuracy", r.get("line-accuracy"))
        cer = f"{r['cer']:.2%}" if "cer" in r else ""
        lines.append(f"| {r['model']} | {r['target']:.0%} | {r['variant']} | {acc:.2%} | {cer} | "
                     f"{r.get('steps', '')} | {r.get('finetune_seconds', '')} | {r.get('seconds', '')} |")
    if dc_rows:
        lines += ["", "## Deep Compression with retraining (digits VGG-16-BN, 450 test images)", "",
                  (f"`compress --sparsity S --conv-bits B --data CALIB` (lsq refit, 5-bit fc codebooks); retraining adds "
                  f"`--finetune-epochs {args.dc_epochs:g} --finetune-data TRAIN --prune-steps {args.dc_prune_steps}` "
                  f"(half the epochs masked, spread over the pruning steps; half fine-tuning the codebooks). "
                  f"Per-layer: `{args.dc_per_layer}` (first match wins)."), "",
                  "| pruning | weights pruned | conv bits | retraining | container ratio | accuracy | s |",
                  "|---|---:|---:|---|---:|---:|---:|"]
        for r in dc_rows:
            label = r["pruning"] if r["pruning"] == "per-layer" else f"uniform {float(r['pruning']):.0%}"
            lines.append(f"| {label} | {r['sparsity']:.1%} | {r['conv_bits']} | {r['retraining']} | {r['ratio']:.1f}× | "
                         f"{r['accuracy']:.2%} | {r['seconds']} |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
