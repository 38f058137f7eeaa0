"""--data: .npz, folders of .npy (per input or per sample), folders of images with preprocessing; clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxprune.cli.main import main
from onnxprune.data import ChannelOrder, ImagePreprocess, Layout, Resize, load_data
from onnxprune.errors import InputFileError, UsageError
from onnxprune.normalize import normalize
from tests.channels.builder import G


def model(cin: int = 3, hw: int | None = 8, layout: str = "nchw") -> onnx.ModelProto:
    g = G(cin=cin, hw=hw or 8)
    if layout == "nhwc":
        g.inputs = [("x", ["N", hw or "H", hw or "W", cin])]
        x = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    else:
        if hw is None:
            g.inputs = [("x", ["N", cin, "H", "W"])]
        x = "x"
    y = g.conv(x, cin, 4, name="c1")
    y = g.op("ReduceMean", [y], axes=[2, 3], keepdims=0)
    return normalize(g.build(y))


def write_images(root: Path, classes: dict[str, int], size=(10, 12), mode="RGB") -> None:
    rng = np.random.default_rng(0)
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(arr, "RGB").convert(mode).save(root / cls / f"{i}.png")


def test_npz_folder_per_input_and_per_sample_agree(tmp_path):
    m = model()
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    labels = np.arange(6) % 2
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    (tmp_path / "per_input").mkdir()
    np.save(tmp_path / "per_input" / "x.npy", x)
    np.save(tmp_path / "per_input" / "labels.npy", labels)
    for cls in ("a", "b"):
        (tmp_path / "samples" / cls).mkdir(parents=True)
    for i in range(6):  # class a: even samples, class b: odd; half saved with a leading axis of 1
        sample = x[i:i + 1] if i % 3 == 0 else x[i]
        np.save(tmp_path / "samples" / "ab"[i % 2] / f"{i:02d}.npy", sample)
    npz = load_data(tmp_path / "d.npz", m)
    per_input = load_data(tmp_path / "per_input", m)
    samples = load_data(tmp_path / "samples", m)
    assert np.array_equal(npz.inputs["x"], per_input.inputs["x"])
    assert np.array_equal(npz.labels, per_input.labels)
    order = [0, 2, 4, 1, 3, 5]  # class folders in sorted order, files sorted in each
    assert np.array_equal(samples.inputs["x"], x[order])
    assert samples.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(load_data(tmp_path / "samples", m, limit=4)) == 4


def test_label_shapes(tmp_path):
    """(N,) and (N, 1) are class ids; (N, L) rows (CTC targets padded with -1) are kept; more dims refused."""
    m = model()
    x = np.zeros((4, 3, 8, 8), np.float32)
    for labels, want in ((np.arange(4)[:, None], (4,)), (np.full((4, 6), -1), (4, 6))):
        np.savez(tmp_path / "d.npz", x=x, labels=labels)
        data = load_data(tmp_path / "d.npz", m)
        assert data.labels.shape == want and load_data(tmp_path / "d.npz", m, limit=2).labels.shape[1:] == want[1:]
    np.savez(tmp_path / "d.npz", x=x, labels=np.zeros((4, 2, 2)))
    with pytest.raises(UsageError, match="labels of shape"):
        load_data(tmp_path / "d.npz", m)


def test_image_folder_preprocessing(tmp_path):
    write_images(tmp_path / "imgs", {"cat": 2, "dog": 3})
    pre = ImagePreprocess(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    data = load_data(tmp_path / "imgs", model(), pre)
    assert data.inputs["x"].shape == (5, 3, 8, 8) and data.inputs["x"].dtype == np.float32
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    # the same pixels by hand: stretch-resize with Pillow, scale, normalize, NCHW
    with Image.open(tmp_path / "imgs" / "dog" / "0.png") as img:
        px = np.asarray(img.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32)
    want = ((px / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])).transpose(2, 0, 1)
    assert np.allclose(data.inputs["x"][2], want, atol=1e-5)
    bgr = load_data(tmp_path / "imgs", model(), ImagePreprocess(channel_order=ChannelOrder.BGR))
    rgb = load_data(tmp_path / "imgs", model())
    assert np.array_equal(bgr.inputs["x"][:, ::-1], rgb.inputs["x"])
    nhwc = load_data(tmp_path / "imgs", model(layout="nhwc"))
    assert np.array_equal(nhwc.inputs["x"], rgb.inputs["x"].transpose(0, 2, 3, 1))
    gray = load_data(tmp_path / "imgs", model(cin=1))
    assert gray.inputs["x"].shape == (5, 1, 8, 8)
    crop = load_data(tmp_path / "imgs", model(hw=None), ImagePreprocess(size=(6, 6), resize=Resize.CROP))
    assert crop.inputs["x"].shape == (5, 3, 6, 6)
    with pytest.raises(UsageError, match="`size`"):
        load_data(tmp_path / "imgs", model(hw=None))
    with pytest.raises(UsageError, match="`mean` has 2 values"):
        load_data(tmp_path / "imgs", model(), ImagePreprocess(mean=(0.1, 0.2)))
    assert load_data(tmp_path / "imgs", model(), ImagePreprocess(layout=Layout.NCHW)).inputs["x"].shape[1] == 3


@pytest.mark.parametrize("setup,error,match", [
    (lambda d: np.savez(d / "d.npz", y=np.zeros((2, 3, 8, 8), np.float32)), UsageError, "no array named 'x'"),
    (lambda d: np.savez(d / "d.npz", x=np.zeros((2, 3, 9, 8), np.float32)), UsageError, "needs 8 at axis 2"),
    (lambda d: np.savez(d / "d.npz", x=np.zeros((2, 3, 8), np.float32)), UsageError, "rank"),
    (lambda d: np.savez(d / "d.npz", x=np.zeros((2, 3, 8, 8), np.complex64)), UsageError, "complex64"),
    (lambda d: np.savez(d / "d.npz", x=np.zeros((2, 3, 8, 8), np.float32), labels=np.zeros(3)), UsageError,
     "number of samples"),
    (lambda d: (d / "d.npz").write_bytes(b"not a zip"), InputFileError, "not a readable .npz"),
    (lambda d: (d / "d.npz").mkdir() or (d / "d.npz" / "junk.txt").write_text("x"), UsageError, "no .npy or image"),
    (lambda d: (d / "d.npz").mkdir() or (d / "d.npz" / "a.png").write_bytes(b"garbage"), InputFileError,
     "not a readable image"),
    (lambda d: (d / "d.npz").mkdir() or np.save(d / "d.npz" / "a.npy", np.zeros((3, 8, 8), np.float32))
     or np.save(d / "d.npz" / "b.npy", np.zeros((3, 7, 8), np.float32)), UsageError, "different shapes"),
])
def test_bad_data_is_a_clear_error(tmp_path, setup, error, match):
    setup(tmp_path)
    with pytest.raises(error, match=match):
        load_data(tmp_path / "d.npz", model())


def test_cli_takes_an_image_folder(tmp_path, capsys):
    write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    onnx.save(model(), tmp_path / "m.onnx")
    assert main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5",
                 "--criterion", "activation", "--data", str(tmp_path / "imgs"), "--mean", "0.5", "--std", "0.25",
                 "--metric", "cosine"]) == 0
    assert main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.5",
                 "--data", str(tmp_path / "imgs"), "--mean", "0.5,0.5"]) == 2
    assert "--mean has 2 values" in capsys.readouterr().err
