"""Train the hard benchmark models on generated data (:mod:`models.synth`) and export them with BatchNorm kept.

- ``textline``: :class:`~models.architectures.TextLineRecognizer` (conv backbone -> Linear -> 2 pre-LN attention
  layers -> CTC classifier, 1.26 M parameters) on rendered lines of 4-10 characters, 32x128 grayscale. Scored
  by exact-line accuracy and character error rate (greedy CTC decoding).
- ``glyphs``: :class:`~models.architectures.GlyphResNet` (1.5 M parameters) on 47 classes of rendered glyphs
  (digits, capitals and confusable lowercase letters), 32x32 grayscale, heavily degraded. Scored by top-1.

Splits come from disjoint seeds: train (generated here, not kept), calibration (256 samples, ``*_calib.npz``)
and test (``*_test.npz``), both written as float16 (inputs rounded to 8-bit levels, so nothing is lost) with
``labels`` (class ids, or CTC targets padded with -1). Writes into models/hard/: ``<name>.onnx`` (opset 17,
dynamic batch; the recognizer also a dynamic width), ``<name>.pt`` and ``results.json`` (accuracy of the ONNX
file on the test split, measured with ONNX Runtime).

Usage: python -m models.train_hard [--models textline,glyphs] [--steps N] [--train-size N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import GlyphResNet, TextLineRecognizer, ZooEntry
from models.export_zoo import export
from models.synth import (
    GLYPH_CLASSES,
    LINE_HEIGHT,
    LINE_WIDTH,
    TEXT_ALPHABET,
    encode_labels,
    glyphs,
    text_lines,
)

OUT_DIR = Path(__file__).parent / "hard"
TRAIN_SEED, CALIB_SEED, TEST_SEED = 1, 2, 3
CALIB_SIZE = 256


@dataclass(frozen=True)
class Task:
    build: Callable[[], nn.Module]
    generate: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    entry: ZooEntry
    steps: int
    batch: int
    lr: float
    train_size: int
    test_size: int


def _lines(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, texts = text_lines(n, seed)
    return x, encode_labels(texts)


TASKS: dict[str, Task] = {
    "textline": Task(lambda: TextLineRecognizer(len(TEXT_ALPHABET) + 1), _lines,
                     ZooEntry("textline", lambda: TextLineRecognizer(len(TEXT_ALPHABET) + 1),
                              (1, 1, LINE_HEIGHT, LINE_WIDTH), dynamic_width=True),
                     steps=3000, batch=64, lr=2e-3, train_size=40000, test_size=600),
    "glyphs": Task(lambda: GlyphResNet(len(GLYPH_CLASSES)), glyphs,
                   ZooEntry("glyphs", lambda: GlyphResNet(len(GLYPH_CLASSES)), (1, 1, 32, 32)),
                   steps=3000, batch=128, lr=3e-3, train_size=60000, test_size=1000),
}


def line_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Exact-line accuracy and character error rate of greedy CTC decoding against padded targets."""
    from onnxprune.metrics import sequence_metrics

    m = sequence_metrics(logits, logits, labels)
    return {"line_accuracy": m["line-accuracy"], "cer": m["cer"]}


def _loss(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "glyphs":
        return F.cross_entropy(out, y, label_smoothing=0.05)
    log_probs = out.log_softmax(-1).permute(1, 0, 2)                  # (T, N, C)
    lengths = (y > 0).sum(1)
    targets = y[y > 0]
    t = torch.full((out.shape[0],), out.shape[1], dtype=torch.long)
    return F.ctc_loss(log_probs, targets, t, lengths, blank=0, zero_infinity=True)


def train(name: str, task: Task, steps: int, train_size: int) -> nn.Module:
    torch.manual_seed(0)
    start = time.time()
    x, y = task.generate(train_size, TRAIN_SEED)
    print(f"{name}: generated {train_size} training samples in {time.time() - start:.0f} s", flush=True)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = task.build()
    opt = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (task.batch,), generator=gen)
        xb = x[idx]
        if name == "glyphs" and step % 2:                               # cheap extra augmentation
            xb = torch.roll(xb, shifts=(int(torch.randint(-2, 3, (1,))), int(torch.randint(-2, 3, (1,)))), dims=(2, 3))
        loss = _loss(name, model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{name}: step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    return model.eval()


def _save_split(path: Path, x: np.ndarray, labels: np.ndarray) -> None:
    levels = np.round((x + 1) * 127.5) / 127.5 - 1                  # 8-bit levels: exact in float16
    np.savez_compressed(path, input=levels.astype(np.float16), labels=labels)


def score_onnx(name: str, path: Path, split: Path) -> dict[str, float]:
    import onnxruntime as ort

    data = np.load(split)
    x, labels = data["input"].astype(np.float32), data["labels"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"input": x[i:i + 128]})[0] for i in range(0, len(x), 128)])
    if name == "glyphs":
        return {"accuracy": float((out.argmax(1) == labels).mean())}
    return line_scores(out, labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="textline,glyphs")
    parser.add_argument("--steps", type=int, help="training steps (default: per model)")
    parser.add_argument("--train-size", type=int, help="training samples (default: per model)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    OUT_DIR.mkdir(exist_ok=True)
    results_path = OUT_DIR / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.models.split(","):
        task = TASKS[name]
        calib, test = OUT_DIR / f"{name}_calib.npz", OUT_DIR / f"{name}_test.npz"
        _save_split(calib, *task.generate(CALIB_SIZE, CALIB_SEED))
        _save_split(test, *task.generate(task.test_size, TEST_SEED))
        start = time.time()
        model = train(name, task, args.steps or task.steps, args.train_size or task.train_size)
        seconds = time.time() - start
        torch.save(model.state_dict(), OUT_DIR / f"{name}.pt")
        proto = export(task.entry, "legacy_bn", opset=17, model=model)
        proto.producer_name = "onnxprune models.train_hard"
        onnx.save(proto, OUT_DIR / f"{name}.onnx")
        scores = score_onnx(name, OUT_DIR / f"{name}.onnx", test)
        results[name] = {"test": scores, "test_samples": task.test_size, "train_samples": args.train_size or
                         task.train_size, "steps": args.steps or task.steps, "train_seconds": round(seconds),
                         "params": sum(p.numel() for p in model.parameters())}
        print(f"{name}: test {scores} ({seconds:.0f} s)", flush=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
