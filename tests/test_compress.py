"""Deep Compression: connection pruning, k-means sharing, the sparse index, Huffman streams and the container."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxprune.passes import ConnectionPruning, PruneConnections

import onnxprune
from onnxprune.cli.main import main
from onnxprune.compression import (
    CompressOptions,
    Init,
    Sharing,
    compress,
    decompress,
    huffman,
    sparse_index,
)
from onnxprune.compression.kmeans import kmeans_1d
from onnxprune.compression.runnable import runnable
from onnxprune.errors import InvalidModelError
from onnxprune.pass_infra import PassManager
from onnxprune.verify import make_session

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"


@pytest.fixture(scope="module")
def student():
    return onnxprune.load(DIGITS / "studentnet.onnx")


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("bits", [1, 5, 8])
def test_sparse_index_round_trip_with_fillers(bits):
    rng = np.random.default_rng(bits)
    size = 5000
    positions = np.sort(rng.choice(size, 300, replace=False))
    positions[-1] = size - 1
    values = rng.integers(1, 30, positions.size)
    gaps, vals = sparse_index.encode(positions, values, bits)
    assert gaps.max() < 2 ** bits
    assert (gaps.size > positions.size) == bool((np.diff(positions, prepend=-1) > 2 ** bits).any())
    got_pos, got_vals = sparse_index.decode(gaps, vals, size)
    real = got_vals > 0
    assert np.array_equal(got_pos[real], positions) and np.array_equal(got_vals[real], values)
    with pytest.raises(ValueError):
        sparse_index.decode(gaps, vals, size - 1)


def test_huffman_round_trip_and_beats_fixed_width():
    rng = np.random.default_rng(0)
    symbols = rng.geometric(0.3, 20000) - 1            # skewed: Huffman must beat log2(alphabet) bits
    stream = huffman.encode(symbols)
    assert np.array_equal(huffman.decode(stream), symbols)
    assert stream.nbits < np.ceil(np.log2(symbols.max() + 1)) * symbols.size * 0.7
    assert np.array_equal(huffman.decode(huffman.encode(np.array([7, 7, 7]))), [7, 7, 7])
    assert huffman.decode(huffman.encode(np.array([], dtype=np.int64))).size == 0


@pytest.mark.parametrize("init", list(Init))
def test_kmeans_inits(init):
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(-1, 0.05, 500), rng.normal(2, 0.05, 500)])
    centroids, labels = kmeans_1d(v, 2, init)
    assert np.allclose(sorted(centroids), [-1, 2], atol=0.05)
    assert np.array_equal(centroids[labels] > 0, v > 0)
    exact, lab = kmeans_1d(np.array([0.5, -0.5, 0.5]), 4, init)
    assert np.array_equal(exact[lab], [0.5, -0.5, 0.5])  # few distinct values: lossless


def test_connection_pruning_rules(student):
    model = onnxprune.fold(student).model
    pruned = PassManager([PruneConnections(ConnectionPruning(sparsity=0.6))]).run(model).model
    coded = [t for t in pruned.graph.initializer if t.dims and len(t.dims) == 4]
    for t in coded:
        w = numpy_helper.to_array(t)
        assert abs((w == 0).mean() - 0.6) <= 1.0 / w.size + 1e-9
    q = PassManager([PruneConnections(ConnectionPruning(quality=0.5))]).run(model).model
    before, after = weights(model), weights(q)
    for name, w in after.items():
        if w.ndim == 4:
            assert np.array_equal(w == 0, np.abs(before[name]) < 0.5 * before[name].std())
    glob = ConnectionPruning(sparsity=0.5, sparsity_for=(("*", 0.0),))
    assert all(np.array_equal(w, weights(model)[k]) for k, w in
               weights(PassManager([PruneConnections(glob)]).run(model).model).items())


def test_compress_round_trip_is_bit_exact_and_runs(student, tmp_path):
    result = compress(student, CompressOptions(ConnectionPruning(sparsity=0.5), Sharing(conv_bits=4)))
    restored = decompress(result.container)
    want, got = weights(result.model), weights(restored)
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
    coded = [r for r in result.layers]
    assert coded and all(r.bits == (4 if r.kind == "conv" else 5) for r in coded)
    assert all(len(np.unique(got[r.tensor])) <= 2 ** r.bits for r in coded)  # shared: at most 2^bits values
    assert result.ratio > 5
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = make_session(result.model).run(None, {"input": x})[0]
    small = runnable(result.container)
    assert small.ByteSize() < student.ByteSize() / 3
    assert np.array_equal(make_session(restored).run(None, {"input": x})[0], ref)
    assert np.abs(make_session(small).run(None, {"input": x})[0] - ref).max() <= 1e-6 * np.abs(ref).max()
    plain = compress(student, CompressOptions(ConnectionPruning(sparsity=0.7), Sharing(share=False)))
    dense = weights(plain.model)
    assert all(np.array_equal(v, dense[k]) for k, v in weights(decompress(plain.container)).items())
    assert len(runnable(plain.container).graph.sparse_initializer) > 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty"])
def test_corrupt_containers_are_rejected(student, tmp_path, damage, capsys):
    data = bytearray(compress(student).container)
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "magic":
        data[:4] = b"PK\x03\x04"
    else:
        data = bytearray()
    with pytest.raises(InvalidModelError, match="container|too short"):
        decompress(bytes(data))
    path = tmp_path / "bad.onnxz"
    path.write_bytes(bytes(data))
    assert main(["decompress", str(path), "-o", str(tmp_path / "out.onnx")]) == InvalidModelError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()


def test_compress_cli(tmp_path, capsys):
    src = DIGITS / "studentnet.onnx"
    out, run_path, report = tmp_path / "s.onnxz", tmp_path / "s.run.onnx", tmp_path / "r.json"
    rc = main(["compress", str(src), "-o", str(out), "--sparsity", "0.5", "--runnable", str(run_path), "--data",
               str(DIGITS / "digits_calib.npz"), "--limit", "64", "--recover", "bias", "--report", str(report)])
    assert rc == 0 and out.exists() and run_path.exists() and report.exists()
    assert "container" in capsys.readouterr().out
    assert main(["decompress", str(out), "-o", str(tmp_path / "d.onnx")]) == 0
    onnx.checker.check_model(str(tmp_path / "d.onnx"), full_check=True)


@pytest.mark.parametrize("opset,index_type", [(21, onnx.TensorProto.UINT4), (17, onnx.TensorProto.UINT8)])
def test_runnable_uses_uint4_indices_from_opset_21(opset, index_type):
    from onnxprune.normalize import normalize
    from tests.channels.builder import G
    from tests.graphs import rand

    g = G(cin=4, hw=6, opset=opset)
    y = g.op("Conv", ["x", g.const(rand(7, 4, 3, 3)), g.const(rand(7))], name="c", pads=[1, 1, 1, 1])
    model = normalize(g.build(y))
    result = compress(model, CompressOptions(ConnectionPruning(sparsity=0.3), Sharing(conv_bits=4)))
    small = runnable(result.container)
    onnx.checker.check_model(small)
    indices = [t for t in small.graph.initializer if t.name.endswith("__indices")]
    assert [t.data_type for t in indices] == [index_type]
    if index_type == onnx.TensorProto.UINT4:
        assert len(indices[0].raw_data) == (7 * 4 * 9 + 1) // 2          # two per byte
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    assert np.array_equal(make_session(small).run(None, {"x": x})[0], make_session(result.model).run(None, {"x": x})[0])


@pytest.mark.long
def test_max_drop_backs_off_sparsity_and_defaults_with_data(tmp_path):
    """--sparsity 0.97 ruins StudentNet; --max-drop 1 scales every layer back until the held-out top-1 drop is
    within a point. With --data and no pruning option, sensitivity per layer and --max-drop 1 are the default."""
    import json

    common = ["--data", str(DIGITS / "digits_calib.npz"), "--eval-data", str(DIGITS / "digits_test.npz"),
              "--limit", "128", "--no-sharing", "--recover", "bias", "-q"]
    model = str(DIGITS / "studentnet.onnx")
    assert main(["compress", model, "-o", str(tmp_path / "a.onnxz"), "--sparsity", "0.97",
                 "--report", str(tmp_path / "a.json"), *common]) == 0
    assert main(["compress", model, "-o", str(tmp_path / "b.onnxz"), "--sparsity", "0.97", "--max-drop", "1",
                 "--report", str(tmp_path / "b.json"), *common]) == 0
    assert main(["compress", model, "-o", str(tmp_path / "c.onnxz"), "--report", str(tmp_path / "c.json"),
                 *common]) == 0

    def drop(name: str) -> float:
        q = json.loads((tmp_path / name).read_text())["quality"]
        return 100 * (q["original"]["accuracy"] - q["compressed"]["accuracy"])

    b = json.loads((tmp_path / "b.json").read_text())
    assert drop("a.json") > 1 and drop("b.json") <= 1
    assert any("scaled by" in n for n in b["notes"])
    c = json.loads((tmp_path / "c.json").read_text())
    assert any("defaults with `data`" in n for n in c["notes"]) and drop("c.json") <= 1
    assert json.loads((tmp_path / "b.json").read_text())["ratio"] > 1


@pytest.mark.parametrize("argv,words", [(["--max-drop", "1", "--sparsity", "0.5"], "needs --data"),
                                        (["--max-drop", "-1", "--data", "CALIB"], "expected points >= 0")])
def test_bad_max_drop(argv, words, tmp_path, capsys):
    argv = [str(DIGITS / "digits_calib.npz") if a == "CALIB" else a for a in argv]
    assert main(["compress", str(DIGITS / "studentnet.onnx"), "-o", str(tmp_path / "x.onnxz"), *argv, "-q"]) == 2
    assert words in capsys.readouterr().err
