"""Train zoo models on scikit-learn's handwritten digits and export them with BatchNorm kept.

The digits (1,797 real 8x8 scans, shipped inside scikit-learn, no download) are upscaled to 32x32, scaled to
[-1, 1] and repeated to 3 channels so the CIFAR architectures are used unchanged. The split is fixed
(``train_test_split(test_size=0.25, random_state=0, stratify=y)``).

Writes into models/digits/: ``<name>.onnx`` (legacy exporter, ``TrainingMode.PRESERVE``: BN kept, dynamic
batch; PyTorch-side comparisons load the weights back from it with ``models.onnx_weights``), ``digits_test.npz``
(``input``, ``labels``) and ``results.json`` (test accuracy of the ONNX file, measured with ONNX Runtime).

Usage: python -m models.train_digits [--models studentnet,vgg16_bn,resnet56] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import ResNetCifar, StudentNet, VGG16BN, ZooEntry
from models.export_zoo import export

OUT_DIR = Path(__file__).parent / "digits"
SEED = 0


@dataclass(frozen=True)
class Recipe:
    build: Callable[[], nn.Module]
    epochs: int
    lr: float


RECIPES: dict[str, Recipe] = {
    "studentnet": Recipe(lambda: StudentNet(base=16, width_mult=1.0, in_channels=3, num_classes=10), 40, 3e-3),
    "vgg16_bn": Recipe(lambda: VGG16BN(width=0.25, num_classes=10), 30, 2e-3),
    "resnet56": Recipe(lambda: ResNetCifar(56, num_classes=10), 20, 3e-3),
}


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x as float32 N x 3 x 32 x 32 in [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1).numpy()
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 3 pixels (pad with background, crop)."""
    padded = F.pad(x, (3, 3, 3, 3), value=-1.0)
    dx, dy = torch.randint(0, 7, (2,), generator=g).tolist()
    return padded[:, :, dy:dy + 32, dx:dx + 32]


def train(name: str, epochs: int | None = None, log: Callable[[str], None] = print) -> tuple[nn.Module, float]:
    recipe = RECIPES[name]
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    model = recipe.build()
    n_epochs = epochs or recipe.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=5e-4)
    steps = n_epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    for epoch in range(n_epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        start, total = time.time(), 0.0
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(_augment(xt[idx], g)), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = evaluate_torch(model, x_te, y_te)
        log(f"{name} epoch {epoch + 1}/{n_epochs} loss {total / len(xt):.3f} test acc {acc:.4f} "
            f"({time.time() - start:.1f}s)")
    return model.eval(), evaluate_torch(model, x_te, y_te)


@torch.no_grad()
def evaluate_torch(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def evaluate_onnx(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(RECIPES))
    ap.add_argument("--epochs", type=int, help="override every recipe's epoch count")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x_tr, y_tr, x_te, y_te = load_digits_split()
    np.savez_compressed(args.out / "digits_test.npz", input=x_te, labels=y_te)
    # the training split, for `onnxprune finetune` (make demo, bench_finetune): float16 keeps it near 1 MB
    np.savez_compressed(args.out / "digits_train.npz", input=x_tr.astype(np.float16), labels=y_tr)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.models.split(","):
        model, torch_acc = train(name, args.epochs)
        entry = ZooEntry(name, RECIPES[name].build, (1, 3, 32, 32))
        proto = export(entry, "legacy_bn", model=model)
        onnx_path = args.out / f"{name}.onnx"
        onnx.save(proto, onnx_path)
        acc = evaluate_onnx(onnx_path, x_te, y_te)
        results[name] = {"test_accuracy": round(acc, 4), "torch_test_accuracy": round(torch_acc, 4),
                         "test_samples": int(len(y_te)), "epochs": args.epochs or RECIPES[name].epochs,
                         "onnx_bytes": onnx_path.stat().st_size}
        print(f"{name}: ONNX test accuracy {acc:.4f} -> {onnx_path}")
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
