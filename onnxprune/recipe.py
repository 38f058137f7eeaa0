"""Recipes: a pipeline of onnxprune steps in a YAML file, with exactly the CLI's options.

```yaml
data: calib.npz                 # optional: --data for every step that takes it (a manifest may override)
eval-data: heldout.npz          # optional: --eval-data for prune/compress/emit, and the data bench measures on
steps:
  - fold
  - prune: {target-flops: 0.7, criterion: l1, round-to: 8, recover: lsq}
  - finetune: {data: train.npz, epochs: 3}   # distils the model's original (the teacher unless given)
  - compress: {sparsity: 0.9, runnable: true}
  - emit: {target: [cpu, mobile], int8: static}
  - bench: {runs: 20}
```

Each step is a typed step of :mod:`onnxprune.steps` (``fold``, ``prune``, ``sensitivity``, ``finetune``,
``compress``, ``emit``, ``bench``); its keys are the step's fields, named as the subcommand's long options without
the dashes (``target-flops`` or ``target_flops``). ``true``/``false`` set a flag, a list gives an option that takes
several values (``exclude``, ``sparsity-for``);
``emit: {target: [...]}`` emits once per target. The runner sets the model, ``-o`` and the report files, and
writes what ``dump-dir``, ``plan-out`` and ``runnable: true`` ask for into the model's folder; a
``prune`` step with ``sensitivity: previous`` uses the folder of the last ``sensitivity`` step. Every key is
checked against the step's fields when the recipe is loaded, so a typo fails before any model runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxprune.errors import UsageError
from onnxprune.steps import STEPS as STEP_CLASSES
from onnxprune.steps.base import StepOptionError

STEPS = tuple(STEP_CLASSES)
RUNNER_SET = {"model", "models", "output", "report", "json", "csv", "markdown", "html", "plot"}
#: Options that name a file or folder to write: in a recipe only ``true`` (the runner writes it into the model's
#: output folder, named after the step) or ``false``, so no step writes outside that folder.
OUTPUT_OPTIONS = {"dump-dir": "dump", "plan-out": "plan.json", "runnable": "small.onnx"}


class RecipeError(UsageError):
    """The recipe file is unreadable, not YAML, or names an unknown step or option (the message names the key)."""


@dataclass(frozen=True)
class Step:
    kind: str
    options: tuple[tuple[str, Any], ...] = ()   # (option name with dashes, value), in file order

    def option(self, name: str, default: Any = None) -> Any:
        return next((v for k, v in self.options if k == name), default)

    def with_overrides(self, overrides: dict[str, Any]) -> Step:
        merged = dict(self.options)
        merged.update({_dashed(k): v for k, v in overrides.items()})
        return Step(self.kind, tuple(merged.items()))


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    data: str | None = None
    source: str = "recipe"
    eval_data: str | None = None   # held-out data: --eval-data, and what bench measures on

    def fingerprint(self) -> str:
        """A hash of what the recipe does (for --resume)."""
        canonical = json.dumps({"steps": [[s.kind, list(map(list, s.options))] for s in self.steps],
                                "data": self.data, "eval_data": self.eval_data}, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_overrides(self, overrides: dict[str, dict[str, Any]], data: str | None,
                       eval_data: str | None = None) -> Recipe:
        """Per-model overrides from a manifest: ``{step kind: {option: value}}`` applied to every such step."""
        unknown = set(overrides) - {s.kind for s in self.steps}
        if unknown:
            raise RecipeError(f"{self.source}: override for step(s) not in the recipe: {', '.join(sorted(unknown))}")
        steps = tuple(s.with_overrides(overrides.get(s.kind, {})) for s in self.steps)
        recipe = Recipe(steps, data or self.data, self.source, eval_data or self.eval_data)
        for i, step in enumerate(recipe.steps):
            _check_step(step, f"{self.source}: steps[{i}].{step.kind}")
        return recipe


def _dashed(key: str) -> str:
    return str(key).replace("_", "-")


def _check_step(step: Step, where: str) -> None:
    """Every key is a field of the step (with "did you mean") and every value fits it."""
    cls = STEP_CLASSES[step.kind]
    flags = cls.flags()
    for key, value in step.options:
        if key.replace("-", "_") in RUNNER_SET:
            raise RecipeError(f"{where}.{key}: set by the runner, not by the recipe")
        if key in OUTPUT_OPTIONS and key in flags:
            if not isinstance(value, bool):
                raise RecipeError(f"{where}.{key}: true or false (the runner writes it into the model's output "
                                  f"folder), not a path")
            continue
        if key == "target" and step.kind == "emit" and isinstance(value, list):
            for v in value:
                _validate(cls, key, v, where)
            continue
        _validate(cls, key, value, where)


def _validate(cls: type, key: str, value: Any, where: str) -> None:
    try:
        cls.from_options({key: value}, where)
    except StepOptionError as e:
        raise RecipeError(str(e)) from None


#: YAML aliases a recipe or manifest may use: enough for sharing a few option blocks, too few for an alias bomb
#: (nested aliases that expand a few hundred bytes into gigabytes).
MAX_YAML_ALIASES = 64
#: The largest recipe or manifest file read.
MAX_YAML_BYTES = 8 << 20


def load_yaml(text: str | bytes, source: str, error: type[UsageError] = UsageError) -> Any:
    """``yaml.safe_load`` with at most :data:`MAX_YAML_ALIASES` aliases; ``error`` (one line) on bad YAML."""
    import yaml

    class _Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    mark = self.peek_event().start_mark
                    raise error(f"{source}: line {mark.line + 1}: more than {MAX_YAML_ALIASES} YAML aliases "
                                f"(refusing a possible alias bomb)")
            return super().compose_node(parent, index)

    if len(text) > MAX_YAML_BYTES:
        raise error(f"{source}: {len(text)} bytes is too large for a recipe or manifest")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{source}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply") from None


def parse_recipe(text: str | bytes, source: str = "recipe") -> Recipe:
    raw = load_yaml(text, source, RecipeError)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a mapping with 'steps'")
    raw = {("eval-data" if k == "eval_data" else k): v for k, v in raw.items()}
    unknown = set(raw) - {"steps", "data", "eval-data"}
    if unknown:
        raise RecipeError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (expected steps, data, eval-data)")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RecipeError(f"{source}: 'steps' must be a non-empty list")
    steps = []
    for i, item in enumerate(raw_steps):
        if isinstance(item, str):
            kind, opts = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            kind, opts = next(iter(item.items()))
            opts = {} if opts is None else opts
        else:
            raise RecipeError(f"{source}: steps[{i}]: expected a step name or {{name: {{options}}}}")
        if kind not in STEPS:
            raise RecipeError(f"{source}: steps[{i}]: unknown step {kind!r} (expected one of {', '.join(STEPS)})")
        if not isinstance(opts, dict):
            raise RecipeError(f"{source}: steps[{i}].{kind}: options must be a mapping")
        step = Step(kind, tuple((_dashed(k), v) for k, v in opts.items()))
        _check_step(step, f"{source}: steps[{i}].{kind}")
        steps.append(step)
    for key in ("data", "eval-data"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise RecipeError(f"{source}: {key}: expected a path")
    return Recipe(tuple(steps), raw.get("data"), source, raw.get("eval-data"))


def load_recipe(path: str | Path) -> Recipe:
    from onnxprune.errors import InputFileError
    from onnxprune.paths import read_regular_file

    p = Path(path)
    try:
        text = read_regular_file(p, "recipe")
    except InputFileError as e:
        raise RecipeError(f"cannot read the recipe: {e}") from None
    return parse_recipe(text, str(p))


def _needs_data(step: Step) -> str | None:
    """Why ``step`` needs calibration data with the options it has (None when it does not)."""
    recover = step.option("recover")
    if step.kind == "sensitivity":
        return "it measures each group on data"
    if step.kind == "finetune":
        return "it trains on data"
    if step.kind == "prune":
        if recover in ("bias", "lsq"):
            return f"recover {recover}"
        if step.option("criterion") in ("activation", "apoz"):
            return f"criterion {step.option('criterion')}"
        if step.option("schedule") == "layerwise":
            return "schedule layerwise"
    if step.kind == "compress" and (step.option("tolerance") is not None or recover in ("bias", "lsq")):
        return "tolerance" if step.option("tolerance") is not None else f"recover {recover}"
    if step.kind == "emit" and step.option("int8") in ("static", True) and step.option("calibration") != "random":
        return "int8 static calibration"
    return None


def check_requirements(recipe: Recipe, where: str = "") -> None:
    """What can be known before any model runs: a step that needs data has some (from the recipe, the manifest
    entry or --data), ``sensitivity: previous`` follows a sensitivity step and ``latency-table: previous`` a
    profile step. Raises RecipeError."""
    seen: set[str] = set()
    for i, step in enumerate(recipe.steps):
        at = f"{where or recipe.source}: steps[{i}].{step.kind}"
        reason = _needs_data(step)
        if reason and recipe.data is None and step.option("data") is None:
            raise RecipeError(f"{at}: needs data ({reason}); give data: in the recipe, in the manifest entry, "
                              f"or `data`")
        for key, kind in (("sensitivity", "sensitivity"), ("latency-table", "profile")):
            if step.kind == "prune" and step.option(key) == "previous" and kind not in seen:
                raise RecipeError(f"{at}: {key}: previous, but no {kind} step comes before it")
        seen.add(step.kind)
