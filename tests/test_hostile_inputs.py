"""Hostile files: a few hundred bytes that ask for gigabytes, devices and pipes, paths that point elsewhere.

Each case runs the real CLI in a subprocess whose address space is capped (RLIMIT_AS), so a regression fails
(MemoryError, a crash, a timeout) instead of exhausting the machine. Every case must end with one line on stderr,
its documented exit code, and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compression.container import _HEAD, FORMAT_VERSION, MAGIC
from onnxprune.errors import (
    InputFileError,
    InvalidModelError,
    ResourceLimitError,
    UsageError,
)
from tests.graphs import conv_bn

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP = 3 << 30          # address space of the subprocess: far below what any of these files asks for


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, preexec_fn=cap, env=env, check=False)


def one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    for w in words:
        assert w in err, err
    return err


# --- .onnxz containers ---------------------------------------------------------------------------------------

def pack(header: dict[str, object], payload: bytes = b"", version: int = FORMAT_VERSION) -> bytes:
    """A container with a valid digest around any header: the checksum is integrity, not authentication."""
    head = json.dumps({"format": version, **header}).encode()
    body = _HEAD.pack(MAGIC, version, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def graph_blob() -> bytes:
    return zlib.compress(conv_bn().SerializeToString())


def tensor(shape, gaps: dict[str, object], **extra) -> dict[str, object]:
    return {"name": "w", "shape": shape, "dtype": "float32", "position": 0, "kind": "conv", "bits": 0,
            "index_bits": 8, "gaps": gaps, **extra}


def zlib_bomb(chunks: int) -> bytes:
    """A valid zlib stream of ``chunks`` x 16 MiB of zeros, built from one compressed chunk: after a full flush
    every chunk compresses to the same bytes."""
    chunk = b"\x00" * (1 << 24)
    first = zlib.compressobj(9)
    block = first.compress(chunk) + first.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(chunks):
        adler = zlib.adler32(chunk, adler)
    return block + block[2:] * (chunks - 1) + b"\x03\x00" + struct.pack(">I", adler)


def containers() -> dict[str, bytes]:
    g = graph_blob()
    graph = {"offset": 0, "length": len(g)}
    one_bit = {"offset": len(g), "length": 1, "nbits": 1, "count": [0, 2], "symbols": [0, 1], "n": 1}
    cases = {
        # a 40 GiB tensor declared by a file of a few hundred bytes
        "declares_40_gib": pack({"graph": graph, "tensors": [tensor([100000, 100000], one_bit,
                                                                     values={"offset": len(g) + 1, "length": 4})]},
                                g + b"\x00" + b"\x00" * 4),
        # a Huffman stream claiming 10^12 symbols
        "huffman_count": pack({"graph": graph, "tensors": [tensor([4], {**one_bit, "n": 10**12},
                                                                  values={"offset": len(g) + 1, "length": 16})]},
                              g + b"\x00" * 17),
        # a code table that is not a prefix code, with code lengths past what the decoder supports
        "bad_code_table": pack({"graph": graph, "tensors": [tensor([4], {**one_bit, "count": [0] + [5] * 40,
                                                                        "symbols": list(range(200))},
                                                                  values={"offset": len(g) + 1, "length": 16})]},
                               g + b"\x00" * 17),
        # a graph that inflates past 2 GiB from 2 MB (a zlib bomb)
        "zlib_bomb": None,
        # a header nested 100000 levels deep
        "deep_json": None,
        "old_format": pack({"graph": graph, "tensors": []}, g, version=1),
    }
    blob = zlib_bomb(160)                                                     # 2.5 GiB of zeros in ~2.5 MB
    cases["zlib_bomb"] = pack({"graph": {"offset": 0, "length": len(blob)}, "tensors": []}, blob)
    head = b'{"format": 2, "graph": ' + b"[" * 100000 + b"]" * 100000 + b', "tensors": []}'
    body = _HEAD.pack(MAGIC, FORMAT_VERSION, len(head)) + head
    cases["deep_json"] = body + hashlib.sha256(body).digest()
    return cases


@pytest.fixture(scope="module")
def container_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnxz")
    out = {}
    for name, data in containers().items():
        out[name] = folder / f"{name}.onnxz"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("case", ["declares_40_gib", "huffman_count", "bad_code_table", "zlib_bomb", "deep_json",
                                  "old_format"])
@pytest.mark.parametrize("runnable", [False, True])
def test_hostile_container_is_one_line_exit_4(container_files, case, runnable, tmp_path):
    path = container_files[case]
    if case == "declares_40_gib":
        assert path.stat().st_size < 2000      # most of it the small conv graph
    proc = cli("decompress", str(path), "-o", str(tmp_path / "m.onnx"), *(["--runnable"] if runnable else []))
    one_line(proc, InvalidModelError.exit_code, str(path))
    assert not (tmp_path / "m.onnx").exists()


def test_runnable_checker_error_is_one_line(tmp_path):
    """A container whose coded tensor collides with a graph initializer: the runnable form fails the checker."""
    m = conv_bn()
    g = zlib.compress(m.SerializeToString())
    raw = np.ones(8, np.float32).tobytes()
    gaps_stream = {"offset": len(g), "length": 1, "nbits": 8, "count": [0, 2], "symbols": [0, 1], "n": 8}
    header = {"graph": {"offset": 0, "length": len(g)},
              "tensors": [{**tensor([8], gaps_stream, values={"offset": len(g) + 1, "length": len(raw)}),
                           "name": "bn_scale"}]}
    path = tmp_path / "collide.onnxz"
    path.write_bytes(pack(header, g + b"\x00" + raw))
    for extra in ([], ["--runnable"]):
        one_line(cli("decompress", str(path), "-o", str(tmp_path / "m.onnx"), *extra), InvalidModelError.exit_code)
    assert not (tmp_path / "m.onnx").exists()


# --- models that ask for gigabytes -----------------------------------------------------------------------------

def save(path: Path, nodes, inits, inputs, out_shape) -> Path:
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def shape_bomb(tmp_path: Path, op: str, n: int) -> Path:
    """Shape arithmetic that would materialize n*n elements if folded or propagated."""
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])]
    if op == "ConstantOfShape":
        nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
                 helper.make_node("Add", ["c", "x"], ["y"])]
        inits = [numpy_helper.from_array(np.array([n, n], np.int64), "s")]
    else:  # Range: ONNX's data propagation materializes it in C++
        nodes = [helper.make_node("Range", ["a", "b", "d"], ["r"]),
                 helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["rf", "x"], ["y"])]
        inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("a", 0), ("b", n * n), ("d", 1))]
        x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a"])]
    return save(tmp_path / f"{op}.onnx", nodes, inits, x, ["a"] if op == "Range" else ["a", "b"])


@pytest.mark.parametrize("op,n", [("ConstantOfShape", 16000), ("ConstantOfShape", 100000), ("Range", 16000)])
def test_shape_arithmetic_is_not_materialized(tmp_path, op, n):
    path = shape_bomb(tmp_path, op, n)
    assert path.stat().st_size < 1000
    proc = cli("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ops"]


def test_huge_static_input_is_refused_before_allocating(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    path = save(tmp_path / "big.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [w],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])], [1, 4, 99998, 99998])
    one_line(cli("fold", str(path), "-o", str(tmp_path / "o.onnx"), "--verify"), ResourceLimitError.exit_code,
             "1x3x100000x100000")
    assert not (tmp_path / "o.onnx").exists()


def test_os_out_of_memory_is_one_line_exit_10(tmp_path, monkeypatch, capsys):
    """Under an address-space limit an import or mmap fails with OSError ENOMEM, not MemoryError."""
    import errno

    from onnxprune.cli import fold_cmd
    from onnxprune.cli.main import main

    def no_memory(args):
        raise OSError(errno.ENOMEM, "Cannot allocate memory", "/somewhere")

    monkeypatch.setattr(fold_cmd, "run", no_memory)
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn(), path)
    assert main(["fold", str(path), "-o", str(tmp_path / "o.onnx"), "-q"]) == ResourceLimitError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onnxprune: error: out of memory (OSError: [Errno 12] Cannot allocate memory: '/somewhere')"]


def test_native_allocation_failures_count_as_out_of_memory(monkeypatch):
    """A C++ bad_alloc inside onnx surfaces as SystemError (seen under a zoo worker's --memory-limit once the
    libraries were imported before the limit was set): out of memory when it says so or when the address space
    is nearly exhausted, an internal error otherwise."""
    from onnxprune import limits

    monkeypatch.setattr(limits, "_address_space_left", lambda: 1 << 40)
    assert limits.is_out_of_memory(RuntimeError("std::bad_alloc"))
    assert not limits.is_out_of_memory(SystemError("error return without exception set"))
    assert not limits.is_out_of_memory(ValueError("bad_alloc"))
    monkeypatch.setattr(limits, "_address_space_left", lambda: 1 << 20)
    assert limits.is_out_of_memory(SystemError("error return without exception set"))
    assert not limits.is_out_of_memory(KeyError("x"))


# --- recipes, devices, pipes -----------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    """Nine levels of aliases, each nine times the one before: 9^9 strings from a file of under 1 KB."""
    lines = ["steps:", '  - prune: {exclude: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]}']
    for i in range(1, 9):
        lines.append(f"  - prune: {{exclude: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]}")
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    assert recipe.stat().st_size < 1000
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn(), model)
    one_line(cli("run", str(recipe), str(model), "-o", str(tmp_path / "out"), timeout=30), UsageError.exit_code,
             "alias")


def test_nested_value_where_a_scalar_is_expected(tmp_path):
    recipe = tmp_path / "nested.yaml"
    recipe.write_text("steps:\n  - prune: {exclude: [[conv1, [conv2]]]}\n")
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn(), model)
    one_line(cli("run", str(recipe), str(model), "-o", str(tmp_path / "out")), UsageError.exit_code, "nested")


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
@pytest.mark.parametrize("role", ["model", "data", "plan", "recipe", "container"])
def test_devices_and_pipes_are_refused(tmp_path, kind, role):
    if kind == "dev_zero":
        special = Path("/dev/zero")
        if not special.exists():
            pytest.skip("no /dev/zero")
    else:
        special = tmp_path / "pipe"
        os.mkfifo(special)
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn(), model)
    out = str(tmp_path / "o.onnx")
    args = {"model": ["inspect", str(special)],
            "data": ["prune", str(model), "-o", out, "--data", str(special), "--criterion", "activation"],
            "plan": ["prune", str(model), "-o", out, "--plan", str(special)],
            "recipe": ["run", str(special), str(model), "-o", str(tmp_path / "out")],
            "container": ["decompress", str(special), "-o", out]}[role]
    code = UsageError.exit_code if role == "recipe" else InputFileError.exit_code
    one_line(cli(*args, timeout=60), code, "regular file")


# --- external data ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, where):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 631)
    m = conv_bn()
    w = next(t for t in m.graph.initializer if t.name == "w")
    location = {"absolute": str(secret), "parent": "../secret.bin", "symlink": "link.bin"}[where]
    if where == "symlink":
        (folder / "link.bin").symlink_to(secret)
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(10**9))):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    err = one_line(cli("inspect", str(path)), InvalidModelError.exit_code, "outside the model's folder")
    assert "631" not in err     # nothing about the file it names is revealed


# --- data files ------------------------------------------------------------------------------------------------

def test_npz_declaring_11_gib_is_refused(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn(), model)
    folder = tmp_path / "samples"
    folder.mkdir()
    npy = folder / "x.npy"
    with open(npy, "wb") as f:    # 11 GiB of float32 declared, 1 KB present
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (11 * 1024, 1024, 256)})
        f.write(b"\x00" * 1024)
    data = tmp_path / "bomb.npz"
    with zipfile.ZipFile(data, "w") as z:
        z.write(npy, "x.npy")
    assert data.stat().st_size < 4096
    out = tmp_path / "o.onnx"
    one_line(cli("prune", str(model), "-o", str(out), "--data", str(data), "--criterion", "activation"),
             InputFileError.exit_code, "declares")
    one_line(cli("prune", str(model), "-o", str(out), "--data", str(folder), "--criterion", "activation"),
             InputFileError.exit_code, "declares")                       # a folder of .npy files: same check
    assert not out.exists()


def test_image_decompression_bomb_is_one_line(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("1", (20000, 10000)).save(images / "bomb.png")     # 200 M pixels in a few KB
    model = tmp_path / "m.onnx"
    m = conv_bn(cin=3)
    onnx.save(m, model)
    one_line(cli("prune", str(model), "-o", str(tmp_path / "o.onnx"), "--data", str(images), "--criterion",
                 "activation"), InputFileError.exit_code, "bomb.png")


def test_external_data_written_for_a_model_past_the_threshold(tmp_path, monkeypatch):
    """The automatic external-data path (models over ~1.8 GB), exercised with a lowered threshold on ResNet-56:
    shape constants stay inline so the checker and shape inference still read them."""
    import onnxprune
    import onnxprune.io as io_mod
    from onnxprune.verify import InputSpec, Reference

    monkeypatch.setattr(io_mod, "EXTERNAL_DATA_THRESHOLD", 100_000)
    out = tmp_path / "r56.onnx"
    result = onnxprune.fold(onnxprune.load(DIGITS / "resnet56.onnx"))
    onnxprune.save(result.model, out)
    assert (tmp_path / "r56.onnx.data").stat().st_size > 1_000_000 and out.stat().st_size < 200_000
    back = onnxprune.load(out)
    ref = Reference.of(onnxprune.load(DIGITS / "resnet56.onnx"), InputSpec(batch=2))
    assert ref.compare(back).relative < 1e-5


def test_fold_external_data_yes(tmp_path):
    out = tmp_path / "r56.onnx"
    proc = cli("fold", str(DIGITS / "resnet56.onnx"), "-o", str(out), "--external-data", "yes", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r56.onnx.data").exists()
    assert cli("inspect", str(out)).returncode == 0

