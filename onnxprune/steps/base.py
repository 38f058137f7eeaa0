"""The step contract shared by the CLI, recipes, the zoo and the API.

A step is a frozen dataclass whose fields are its options (named as the CLI's long options, ``target_flops`` for
``--target-flops``; :func:`option` records choices and a differing flag name). ``run(ctx)`` reads ``ctx.model``,
writes only ``ctx.output`` (and ``ctx.report`` when given) and returns a typed :class:`StepResult`. The CLI builds
a step from its arguments and prints the result; a recipe builds it from YAML through :meth:`Step.from_options`,
which validates every key and value against the fields (with "did you mean"); the zoo runs the steps and keeps
their results. The library never imports the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from onnxprune.errors import UsageError


class StepOptionError(UsageError):
    """A step option is unknown or has a value of the wrong kind (the message names the key)."""


def option(default: Any = None, *, choices: tuple[str, ...] = (), flag: str | None = None,
           const: str | None = None) -> Any:
    """A step field: ``choices`` the accepted strings, ``flag`` the option name when it is not the field's
    (``global`` for ``global_ranking``), ``const`` the value ``true`` stands for (``int8: true`` is static)."""
    return field(default=default, metadata={"choices": tuple(choices), "flag": flag, "const": const})


@dataclass(frozen=True)
class StepContext:
    """Where a step reads and writes. ``original``: the model the run started from (finetune's default teacher,
    bench's baseline). ``models``: bench compares these (default: original, then model)."""

    model: Path
    output: Path | None = None
    report: Path | None = None
    original: Path | None = None
    models: tuple[Path, ...] = ()


@dataclass(frozen=True)
class StepResult:
    """What a step did. ``model``: the model file the next step reads (None: the step does not make one);
    ``report``: the step's JSON report; ``files``: every file or folder it wrote; ``details``: the library's
    own result (for the CLI's text); ``exit_code``: non-zero when the step finished but something failed
    (bench: a model could not run)."""

    kind: str
    model: Path | None
    report: dict[str, Any]
    files: tuple[Path, ...] = ()
    details: Any = dataclasses.field(default=None, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    exit_code: int = 0


class Step:
    """Base of every step class (see the module doc); subclasses are frozen dataclasses."""

    kind: ClassVar[str]

    def run(self, ctx: StepContext) -> StepResult:   # pragma: no cover - every step implements it
        raise NotImplementedError

    @classmethod
    def flags(cls) -> dict[str, dataclasses.Field[Any]]:
        """The step's option names (as on the command line, without dashes) and their fields."""
        return {(f.metadata.get("flag") or f.name.replace("_", "-")): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = "") -> Step:
        """The step with ``options`` (keys with dashes or underscores), every key and value checked."""
        flags = cls.flags()
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        at = f"{where}." if where else ""
        for key, value in options.items():
            name = str(key).replace("_", "-")
            if name not in flags:
                near = difflib.get_close_matches(name, list(flags), n=3, cutoff=0.6) or \
                    sorted(k for k in flags if k[:3] == name[:3])[:3]
                hint = f" (did you mean {', '.join(near)}?)" if near else ""
                raise StepOptionError(f"{at}{key}: unknown option of 'onnxprune {cls.kind}'{hint}")
            f = flags[name]
            if value is True and f.metadata.get("const"):
                value = f.metadata["const"]
            values[f.name] = coerce(value, hints[f.name], f.metadata.get("choices", ()), f"{at}{key}")
        return cls(**values)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def coerce(value: Any, hint: Any, choices: tuple[str, ...], where: str) -> Any:
    """``value`` (from YAML or argparse) as a field of type ``hint``; StepOptionError naming ``where``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], choices, where) if len(inner) == 1 else value
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(_scalar(v) for v in items):
            raise StepOptionError(f"{where}: expected a value or a list of values, not a nested structure")
        return tuple(coerce(v, args[0], choices, where) for v in items)
    if isinstance(value, (list, tuple, dict)):
        raise StepOptionError(f"{where}: takes one value, not a {'list' if not isinstance(value, dict) else 'mapping'}")
    if hint is bool:
        if not isinstance(value, bool):
            raise StepOptionError(f"{where}: a flag: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise StepOptionError(f"{where}: expected a value, got {value!r}")
    try:
        if hint is float:
            return float(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is Path:
            return Path(str(value))
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return hint(value)
    except (TypeError, ValueError):
        raise StepOptionError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}") from None
    text = str(value)
    if choices and text not in choices:
        raise StepOptionError(f"{where}: {text!r} is not one of {', '.join(choices)}")
    return text


@dataclass(frozen=True)
class DataOptions:
    """``data`` (an .npz, a folder of .npy files or of images), ``limit`` and the image preprocessing (see
    :func:`onnxprune.steps.inputs.image_preprocess`)."""

    data: Path | None = None
    limit: int | None = None
    size: str | None = None
    resize: str = option("stretch", choices=("stretch", "crop"))
    mean: str = "0"
    std: str = "1"
    scale: float = 1 / 255
    layout: str | None = option(None, choices=("nchw", "nhwc"))
    channel_order: str = option("rgb", choices=("rgb", "bgr"))


@dataclass(frozen=True)
class ShapeOptions:
    """``input_shape``: NAME=1x3x224x224 for inputs with dynamic dims; ``batch``: a dynamic batch dim's size."""

    input_shape: tuple[str, ...] = ()
    batch: int = 1
