"""A model's latency table (what ``onnxprune profile`` writes and ``prune --latency-table`` reads) and the
measurement cache shared by every model profiled on this machine.

The table holds, for every Conv / ConvTranspose / Gemm whose channels pruning can change, its measured latency
as a function of its kept output channels (``out``) and of its kept input channels (``inp``), each on a grid of
counts (:func:`channel_grid`), plus the whole model's measured latency (the calibration). The cache maps
(environment, layer signature) to milliseconds: a second model with the same layers costs nothing. The
environment is ORT's version, provider, threads, CPU model and precision: a table measured elsewhere is not
reused.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune.errors import InputFileError, OutputPathError, UsageError
from onnxprune.io import write_text_atomic

TABLE_FORMAT = 1
#: Most grid points per axis; the counts in between are interpolated (never chosen by the planner).
GRID_POINTS = 16
#: The smallest count a grid reaches, as a fraction of the full count.
GRID_FLOOR = 0.1
#: A layer's net latency (timed alone, less one session call: :attr:`LatencyTable.call_ms`) is at least this
#: fraction of its timed latency: a point timed at or below the call overhead (noise) still costs something.
NET_FLOOR = 0.1


class LatencyTableError(UsageError):
    """A latency table that cannot be read or does not describe this model."""


def channel_grid(channels: int, multiple: int, points: int = GRID_POINTS, floor: float = GRID_FLOOR
                 ) -> tuple[int, ...]:
    """Counts a layer is measured at: multiples of ``multiple`` (the target's channel block) from ``floor`` of
    ``channels`` up, at most ``points`` of them (evenly spread), plus ``channels`` itself. Off-block counts are
    not candidates: a layer timed alone can look fast at one, but in the graph it takes the layers around it
    out of the blocked layout (ORT CPU's NCHWc), and the reorders cost more than the layer saves."""
    low = max(multiple, math.ceil(floor * channels / multiple) * multiple)
    counts = list(range(low, channels, multiple))
    if len(counts) > points - 1:
        step = (len(counts) - 1) / (points - 2)
        counts = sorted({counts[round(i * step)] for i in range(points - 1)})
    return (*counts, channels)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: How layers are timed (``onnxprune.latency.measure``), part of every cache key: entries timed another way are
#: not reused. 2: sessions created in both orders (1 timed the session created first up to 6% slow); 3: the
#: signature ends with how the layer was timed (``LayerTiming``: wall or kernel).
MEASUREMENT_METHOD = 3


@dataclass(frozen=True)
class Environment:
    """What a measurement depends on besides the layer: the cache key's first half."""

    onnxruntime: str
    provider: str
    threads: int
    cpu: str
    precision: str

    @classmethod
    def here(cls, provider: str, threads: int, precision: str) -> Environment:
        return cls(ort.__version__, provider, threads, cpu_model(), precision)

    def key(self) -> str:
        return (f"m{MEASUREMENT_METHOD}|ort {self.onnxruntime}|{self.provider}|{self.threads} threads|{self.cpu}|"
                f"{self.precision}")


@dataclass(frozen=True)
class LayerLatency:
    """One layer's curves: ``out``/``inp`` are (kept count, ms) pairs at grid counts, ascending, ending at the
    full count; empty when that axis is not pruned through this layer (or cannot be: grouped convs).
    ``depthwise``: one axis (``out``) moves input, output and groups together. ``out_elems``: output size."""

    node: str
    op: str
    in_channels: int
    out_channels: int
    full_ms: float
    out_elems: int
    depthwise: bool = False
    out: tuple[tuple[int, float], ...] = ()
    inp: tuple[tuple[int, float], ...] = ()

    def scale(self, kept_in: float | None, kept_out: float | None) -> float:
        """Latency at the kept counts (None: unchanged) relative to the full layer, interpolated on the grid."""
        f = 1.0
        if kept_out is not None and self.out:
            f *= _interp(kept_out, self.out) / self.full_ms
        if kept_in is not None and self.inp and not self.depthwise:
            f *= _interp(kept_in, self.inp) / self.full_ms
        return f


def _interp(k: float, curve: tuple[tuple[int, float], ...]) -> float:
    xs, ys = [c for c, _ in curve], [t for _, t in curve]
    if k <= xs[0]:
        # Below the grid (a layer reading only some of a group's units: zero-padded shortcuts, Concat): never
        # faster than the smallest count measured. Extrapolating in proportion predicted ResNet-56's residual
        # stream, cut to 16 of 64 units, at 0.56 of the model's latency (measured: 0.69).
        return ys[0]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if k <= x1:
            return y0 + (y1 - y0) * (k - x0) / (x1 - x0)
    return ys[-1]


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer curves and the model's latency (``model_ms``, median of ``model_runs``), measured in
    ``environment`` at ``input_shapes``."""

    environment: Environment
    input_shapes: dict[str, tuple[int, ...]]
    model_ms: float
    model_runs: int
    layers: tuple[LayerLatency, ...]
    target: str = "cpu"
    multiple: int = 16                                           # the grid's channel multiple
    calibration: tuple[tuple[float, float, float], ...] = ()   # (uniform ratio, layer sum ms, measured ms)
    seconds: float = 0.0
    measured: int = 0
    cached: int = 0
    notes: tuple[str, ...] = field(default=())
    unblocked_multiple: int = 0   # the grid of groups no blocked kernel touches (0: ``multiple``)
    #: One session call of a graph that computes nothing, timed as the layers are: every layer timed alone pays
    #: it once, the model once in all. 0: layers timed without it (their kernels' time: CPU), or a table written
    #: before it was measured; layers summed as timed.
    call_ms: float = 0.0

    def net_ms(self, ms: float) -> float:
        """A layer's latency timed alone, less the call overhead its one-layer session paid (see ``call_ms``)."""
        return max(ms - self.call_ms, ms * NET_FLOOR)

    def fit(self) -> tuple[float, float]:
        """(a, b) with measured ~ a * layer sum + b: least squares over the calibration points (b >= 0, a > 0);
        with fewer than two points, the whole model over the sum of its layers. The sums are of net latencies
        (:meth:`net_ms`): summed as timed, N layers count N session calls the model pays once, the best line
        has b < 0, and clamped to b = 0 it put a 23 us model (four layers, 4.4 us per call) at 0.46 of its
        latency where it measured 0.73."""
        full = sum(self.net_ms(layer.full_ms) for layer in self.layers)
        points = [(s, m) for _, s, m in self.calibration]
        if len(points) >= 2:
            xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
            a, b = np.polyfit(xs, ys, 1)
            if b < 0 or a <= 0:
                a, b = float((xs * ys).sum() / (xs * xs).sum()), 0.0
            if a > 0:
                return float(a), float(b)
        return (self.model_ms / full if full > 0 else 1.0), 0.0

    def by_node(self) -> dict[str, LayerLatency]:
        return {layer.node: layer for layer in self.layers}

    def to_json(self) -> dict[str, object]:
        return {"format": TABLE_FORMAT, "target": self.target, "multiple": self.multiple,
                "environment": asdict(self.environment),
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "model_ms": self.model_ms, "model_runs": self.model_runs,
                "calibration": [{"ratio": r, "layers_ms": s, "measured_ms": m} for r, s, m in self.calibration],
                "profile_seconds": round(self.seconds, 2), "measured": self.measured, "cached": self.cached,
                "notes": list(self.notes), "unblocked_multiple": self.unblocked_multiple, "call_ms": self.call_ms,
                "layers": [{**asdict(layer), "out": [list(p) for p in layer.out], "inp": [list(p) for p in layer.inp]}
                           for layer in self.layers]}

    def save(self, path: str | Path, source: str | Path | None = None) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_json(), indent=1) + "\n", *([source] if source else []))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputFileError(f"{path}: no such latency table") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LatencyTableError(f"{path}: not a latency table (unreadable JSON: {e})") from None
        try:
            if data.get("format") != TABLE_FORMAT:
                raise LatencyTableError(f"{path}: latency table format {data.get('format')!r}, expected {TABLE_FORMAT}")
            layers = tuple(LayerLatency(**{**layer, "out": tuple((int(c), float(t)) for c, t in layer["out"]),
                                           "inp": tuple((int(c), float(t)) for c, t in layer["inp"])})
                           for layer in data["layers"])
            return cls(Environment(**data["environment"]), {k: tuple(v) for k, v in data["input_shapes"].items()},
                       float(data["model_ms"]), int(data["model_runs"]), layers, str(data.get("target", "cpu")),
                       int(data.get("multiple", 16)),
                       tuple((float(c["ratio"]), float(c["layers_ms"]), float(c["measured_ms"]))
                             for c in data.get("calibration", ())),
                       float(data.get("profile_seconds", 0)), int(data.get("measured", 0)),
                       int(data.get("cached", 0)), tuple(data.get("notes", ())),
                       int(data.get("unblocked_multiple", 0)), float(data.get("call_ms", 0.0)))
        except LatencyTableError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise LatencyTableError(f"{path}: not a latency table ({type(e).__name__}: {e})") from None


def default_cache_dir() -> Path:
    """``$ONNXPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnxprune``, else ``~/.cache/onnxprune``."""
    if os.environ.get("ONNXPRUNE_CACHE_DIR"):
        return Path(os.environ["ONNXPRUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnxprune"


class MeasurementCache:
    """Milliseconds per (environment, layer signature), in ``folder/CACHE_FILE``; ``folder`` None: in memory
    only. Writes merge with what another process saved meanwhile and replace the file atomically; a file of that
    name that is not a cache is never read as one nor replaced."""

    CACHE_FILE = "onnxprune-latency-cache.json"

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else Path(folder) / self.CACHE_FILE
        self._entries: dict[str, float] = self._read()
        self._new: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return {str(k): float(v) for k, v in data.get("entries", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}   # damaged or not a cache: not trusted (and not replaced, see save)

    def _is_cache(self) -> bool:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == TABLE_FORMAT and isinstance(data.get("entries"), dict)

    def get(self, env: Environment, signature: str) -> float | None:
        return self._entries.get(f"{env.key()}|{signature}")

    def put(self, env: Environment, signature: str, ms: float) -> None:
        key = f"{env.key()}|{signature}"
        self._entries[key] = self._new[key] = ms

    def save(self) -> None:
        if self.path is None or not self._new:
            return
        if self.path.exists() and not self._is_cache():
            raise OutputPathError(f"{self.path}: exists and is not an onnxprune latency cache; not replaced "
                                  f"(choose another `cache` folder)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**self._read(), **self._new}
        write_text_atomic(self.path, json.dumps({"format": TABLE_FORMAT, "entries": merged}) + "\n")
        self._new = {}
