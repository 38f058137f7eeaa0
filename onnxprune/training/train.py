"""Fine-tuning an ONNX model in place: knowledge distillation from a teacher (the original model) plus the task
loss when labels are given, on the differentiable engine of :mod:`onnxprune.training.engine`.

Rules:

- The student is checked against ONNX Runtime on the first batch before any training (the ``--verify`` rule);
  an op the engine lacks, or any disagreement, refuses the model with the reason.
- Loss, per output pair (student output i against teacher output i): with a teacher, ``T^2 * KL(teacher ||
  student)`` on softened class scores (the input of a final Softmax/LogSoftmax when the model ends in one; the
  class axis is that Softmax's, else 1 for 2-D and >= 4-D outputs and the last for 3-D sequence outputs);
  with labels, cross-entropy for ``(N,)`` labels on 2-D scores and CTC (blank 0, labels padded with -1 or 0) for
  ``(N, L)`` labels on 3-D ``(N, T, C)`` scores; the two mixed as ``alpha * KD + (1 - alpha) * task``. Feature
  matching adds ``match_weight * MSE / mean(teacher^2)`` on each tensor named in ``match`` (same name and shape
  in both graphs); ``match`` containing ``"auto"`` (unless the student has a tensor of that name) adds the
  tensors :func:`auto_match` picks.
- Teacher targets are computed once with ONNX Runtime (no augmentation, so they do not change between epochs).
- Evaluation (``eval_data``) uses the chosen metric; the best weights by it are the result (early stopping after
  ``patience`` evaluations without improvement). Without eval data the last weights are the result.
- Only initializer / Constant values change (:func:`~onnxprune.training.engine.write_back`).
"""

from __future__ import annotations

import enum
import fnmatch
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from onnxprune.data import Dataset
from onnxprune.errors import InputFileError, UsageError
from onnxprune.metrics import (
    LOWER_IS_BETTER,
    Metric,
    UserMetric,
    check_metric,
    default_metric,
    loss,
    metrics,
    outputs,
)
from onnxprune.progress import stage
from onnxprune.training.engine import (
    OnnxModule,
    to_torch,
    trainable_names,
    verify_engine,
    write_back,
)
from onnxprune.verify import run, session_with_outputs

WARMUP_STEPS = 50   # linear learning-rate warmup: at most this many steps, and at most a tenth of the run
#: Adam's step for a tensor is lr x max(RMS(tensor), RMS_FLOOR) (Adafactor's parameter scaling). A plain Adam step
#: moves every weight by ~lr whatever its scale: at 1e-3 it wrecked a BN-folded ResNet-56 (99.8% -> 10%) in
#: two steps, while 1e-4 left StudentNet under-trained; relative steps are stable on both at one setting.
RMS_FLOOR = 1e-2


class Optimizer(enum.Enum):
    SGD = "sgd"
    ADAM = "adam"


class Schedule(enum.Enum):
    COSINE = "cosine"
    CONSTANT = "constant"


@dataclass(frozen=True)
class FinetuneOptions:
    """How to train. ``steps`` (optimizer steps) overrides ``epochs``. ``lr`` None: 1e-2 for Adam, *relative* to
    each tensor's RMS (see :data:`RMS_FLOOR`), 1e-3 (absolute) for SGD; warmed up linearly over the first
    min(50, steps / 10) steps, then the schedule."""

    epochs: float = 5.0
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 32
    optimizer: Optimizer = Optimizer.ADAM
    schedule: Schedule = Schedule.COSINE
    weight_decay: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.5                    # weight of distillation against the task loss, when both apply
    match: tuple[str, ...] = ()           # tensors whose values the student learns to reproduce
    match_weight: float = 1.0
    freeze: tuple[str, ...] = ()          # globs over tensor names and the names of the nodes reading them
    eval_every: int | None = None         # optimizer steps between evaluations (default: once per epoch)
    patience: int | None = None           # evaluations without improvement before stopping
    seed: int = 0
    threads: int | None = None
    metric: Metric | UserMetric | None = None
    masks: bool = False                   # keep exact zeros of the student's weights at zero (pruned connections)
    #: shared weights (Deep Compression): name -> (codebook with 0 first, index array of the weight's shape);
    #: only the codebooks train (see OnnxModule.tie)
    ties: tuple[tuple[str, np.ndarray, np.ndarray], ...] = ()


@dataclass(frozen=True)
class FinetuneResult:
    model: onnx.ModelProto
    metric: str | None
    before: dict[str, float] | None        # eval data, before training (ONNX Runtime)
    after: dict[str, float] | None         # eval data, the returned model (ONNX Runtime)
    steps: int
    best_step: int | None
    seconds: float
    samples_per_second: float
    engine_relative_diff: float
    trained: tuple[str, ...]
    frozen: tuple[str, ...]
    losses: tuple[tuple[int, float], ...] = field(repr=False)
    evals: tuple[tuple[int, float], ...] = ()
    stopped_early: bool = False
    codebooks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # trained, for options.ties
    matched: tuple[str, ...] = ()          # intermediate tensors matched to the teacher's

    def to_json(self) -> dict[str, object]:
        return {"metric": self.metric, "before": self.before, "after": self.after, "steps": self.steps,
                "best_step": self.best_step, "seconds": round(self.seconds, 2),
                "samples_per_second": round(self.samples_per_second, 1),
                "engine_relative_diff": self.engine_relative_diff, "trained": list(self.trained),
                "frozen": list(self.frozen), "matched": list(self.matched), "stopped_early": self.stopped_early,
                "loss_curve": [[s, round(v, 6)] for s, v in self.losses],
                "eval_curve": [[s, round(v, 6)] for s, v in self.evals]}


@dataclass(frozen=True)
class _Head:
    """Where the loss reads output ``index``: the tensor (class scores) and its class axis."""

    output: str
    scores: str
    axis: int | None      # the Softmax's axis; None: from the rank (see the module doc)


def _heads(model: onnx.ModelProto) -> list[_Head]:
    producers = {o: n for n in model.graph.node for o in n.output}
    heads = []
    for vi in model.graph.output:
        node = producers.get(vi.name)
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), None)
            heads.append(_Head(vi.name, node.input[0], -1 if axis is None else int(axis)))
        else:
            heads.append(_Head(vi.name, vi.name, None))
    return heads


def _axis(head: _Head, rank: int) -> int:
    if head.axis is not None:
        return head.axis
    return -1 if rank == 3 else 1


def frozen_by_globs(model: onnx.ModelProto, names: list[str], globs: tuple[str, ...]) -> set[str]:
    """Trainable tensors matched by a glob directly or through the name of a node that reads them."""
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node.name)
        if node.op_type == "Constant":
            readers.setdefault(node.output[0], []).append(node.name)
    out = set()
    for name in names:
        candidates = [name, *readers.get(name, [])]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            out.add(name)
    return out


def sensitive_layers(directory: Path, tolerance: float) -> tuple[str, ...]:
    """Names of the layers (group source nodes) whose metric drops by more than ``tolerance`` at the smallest
    ratio of an ``onnxprune sensitivity`` run: the notes' strategy 5 freezes them while retraining."""
    path = directory / "sensitivity.json"
    try:
        report = json.loads(path.read_text())
        metric = Metric(report["metric"]) if report["metric"] in {m.value for m in Metric} else None
        baseline, points = report["baseline"], report["points"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputFileError(f"{path}: not a readable onnxprune sensitivity report ({type(e).__name__})") from None
    key = report["metric"]
    smallest: dict[str, dict[str, object]] = {}
    for p in points:
        if p["group"] not in smallest or p["ratio"] < smallest[p["group"]]["ratio"]:
            smallest[p["group"]] = p
    out = []
    for group, p in smallest.items():
        drop = loss(metric, baseline, p["values"]) if metric is not None else baseline[key] - p["values"][key]
        if drop > tolerance:
            out.append(group)
    return tuple(sorted(out))


#: ``--match auto``: at most this many tensors, and at most this many bytes of teacher values kept for them.
AUTO_MATCH = "auto"
AUTO_MATCH_MAX = 4
AUTO_MATCH_BYTES = 256 * 2**20


def auto_match(student: onnx.ModelProto, teacher: onnx.ModelProto, module: OnnxModule,
               feeds: dict[str, np.ndarray], samples: int, exclude: set[str]) -> tuple[str, ...]:
    """Intermediate tensors to match for ``--match auto``: computed by both models under the same name with the
    same float shape (rank >= 2) on ``feeds``, not a graph output or in ``exclude``. Of those, at most
    AUTO_MATCH_MAX spread evenly over the student's node order (the deepest always), within AUTO_MATCH_BYTES of
    teacher values for ``samples`` samples. Pruned layers change shape, so they are never matched; what is left
    is the features a pruning kept whole (residual streams, a block's output, the pooled features)."""
    taught = {o for n in teacher.graph.node for o in n.output if o}
    outputs = {o.name for o in student.graph.output} | {o.name for o in teacher.graph.output} | exclude
    common = list(dict.fromkeys(o for n in student.graph.node for o in n.output
                                if o and o in taught and o not in outputs))
    if not common:
        return ()
    got_teacher = run(session_with_outputs(teacher, common), feeds)
    with torch.no_grad():
        got_student = module(to_torch(feeds), common)
    same = [name for name in common
            if isinstance(got_teacher.get(name), np.ndarray) and got_teacher[name].dtype.kind == "f"
            and got_teacher[name].ndim >= 2 and name in got_student
            and tuple(got_student[name].shape) == got_teacher[name].shape]
    if len(same) > AUTO_MATCH_MAX:
        picks = np.linspace(len(same) - 1, 0, AUTO_MATCH_MAX).round().astype(int)
        same = [same[i] for i in sorted(set(picks.tolist()))]
    chosen, budget = [], AUTO_MATCH_BYTES
    for name in reversed(same):          # deepest first: closest to the outputs the KD loss already reads
        size = got_teacher[name].nbytes // max(1, got_teacher[name].shape[0]) * samples
        if size <= budget:
            chosen.append(name)
            budget -= size
    return tuple(reversed(chosen))


def _targets(teacher: onnx.ModelProto, names: list[str], data: Dataset, batch: int) -> dict[str, np.ndarray]:
    """The teacher's values of ``names`` on every sample (ONNX Runtime, computed once)."""
    session = session_with_outputs(teacher, names, optimize=True)
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in data.batches(max(batch, 64)):
        got = run(session, feeds)
        for n in names:
            chunks[n].append(got[n])
    return {n: np.concatenate(v) for n, v in chunks.items()}


def _kd(student: torch.Tensor, teacher: torch.Tensor, axis: int, temperature: float) -> torch.Tensor:
    log_p_s = F.log_softmax(student / temperature, dim=axis)
    log_p_t = F.log_softmax(teacher / temperature, dim=axis)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=axis)
    return kl.mean() * temperature ** 2


def _task(scores: torch.Tensor, labels: torch.Tensor, axis: int) -> torch.Tensor | None:
    if scores.dim() == 2 and labels.dim() == 1:
        return F.cross_entropy(scores if axis in (1, -1) else scores.t(), labels.long())
    if scores.dim() == 3 and labels.dim() == 2:
        log_probs = F.log_softmax(scores, dim=-1).transpose(0, 1)              # (T, N, C)
        lengths = (labels > 0).sum(dim=1)
        targets = torch.where(labels > 0, labels, torch.zeros_like(labels)).long()
        steps = torch.full((scores.shape[0],), scores.shape[1], dtype=torch.long)
        return F.ctc_loss(log_probs, targets, steps, lengths, blank=0, zero_infinity=True)
    return None


def _evaluate(module: OnnxModule, data: Dataset, reference: np.ndarray, batch: int) -> dict[str, float]:
    module.eval()
    first = module.output_names[0]
    with torch.no_grad():
        got = np.concatenate([module(to_torch(f))[first].numpy() for f in data.batches(max(batch, 64))])
    return metrics(reference, got, data.labels)


def finetune(student: onnx.ModelProto, data: Dataset, *, teacher: onnx.ModelProto | None = None,
             eval_data: Dataset | None = None, options: FinetuneOptions = FinetuneOptions(),
             on_improved: Callable[[onnx.ModelProto, int], None] | None = None) -> FinetuneResult:
    """Train ``student``'s weights on ``data`` (see the module doc) and return it with the new values.

    ``on_improved(model, step)`` is called with each new best model (for ``--save-best``)."""
    if teacher is None and data.labels is None:
        raise UsageError("finetune needs a teacher (`teacher`) or labels in the training data")
    student_inputs = sorted(i.name for i in student.graph.input if i.name not in
                            {t.name for t in student.graph.initializer})
    if teacher is not None:
        teacher_inputs = sorted(i.name for i in teacher.graph.input if i.name not in
                                {t.name for t in teacher.graph.initializer})
        if teacher_inputs != student_inputs:
            raise UsageError(f"teacher inputs {teacher_inputs} differ from the student's {student_inputs}")
        if len(teacher.graph.output) != len(student.graph.output):
            raise UsageError(f"the teacher has {len(teacher.graph.output)} outputs, the student "
                             f"{len(student.graph.output)}")
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)

    names = trainable_names(student)
    frozen = frozen_by_globs(student, names, options.freeze) if options.freeze else set()
    trained = [n for n in names if n not in frozen]
    module = OnnxModule(student, trainable=names)   # refuses ops it lacks, before anything else
    if not trained:
        raise UsageError("nothing to train: every weight is frozen" if names else
                         "nothing to train: the model has no float weight tensors")
    with stage("checking the training engine against ONNX Runtime"):
        first = next(data.batches(min(options.batch_size, len(data))))
        relative = verify_engine(student, module, first)
    for name, p in module.named_onnx_parameters().items():
        p.requires_grad_(name not in frozen)
    for name, codebook, index in options.ties:
        if name not in frozen:
            module.tie(name, codebook, index)
    masks = [(p, p.detach() != 0) for name, p in module.named_onnx_parameters().items()
             if options.masks and name not in frozen]

    student_heads, teacher_heads = _heads(student), _heads(teacher) if teacher is not None else []
    match = options.match
    student_tensors = {o for n in student.graph.node for o in n.output} | {i.name for i in student.graph.input}
    if AUTO_MATCH in match and AUTO_MATCH not in student_tensors:
        if teacher is None:
            raise UsageError("`match` needs a teacher (`teacher`)")
        heads = {h.scores for h in student_heads} | {h.scores for h in teacher_heads}
        match = tuple(m for m in match if m != AUTO_MATCH)
        match += tuple(m for m in auto_match(student, teacher, module, first, len(data), heads) if m not in match)
    if match and teacher is None:
        raise UsageError("`match` needs a teacher (`teacher`)")
    for name in match:
        for m, role in ((student, "student"), (teacher, "teacher")):
            if m is None or name not in {o for n in m.graph.node for o in n.output} | {i.name for i in m.graph.input}:
                raise UsageError(f"`match` {name!r}: no such tensor in the {role}")
    with stage("teacher targets (ONNX Runtime)"):
        wanted = [h.scores for h in teacher_heads] + list(match)
        targets = _targets(teacher, list(dict.fromkeys(wanted)), data, options.batch_size) if teacher else {}

    metric = None
    reference = None
    before = None
    if eval_data is not None:
        reference = outputs(teacher if teacher is not None else student, eval_data)
        metric = options.metric or default_metric(eval_data, reference)
        check_metric(metric, eval_data, reference)
        before = metrics(reference, outputs(student, eval_data), eval_data.labels)

    batch = min(options.batch_size, len(data))
    per_epoch = max(1, len(data) // batch)
    total = options.steps if options.steps is not None else max(1, round(options.epochs * per_epoch))
    lr = options.lr if options.lr is not None else (1e-2 if options.optimizer is Optimizer.ADAM else 1e-3)
    params = [p for p in module.parameters() if p.requires_grad]
    if options.optimizer is Optimizer.ADAM:   # relative steps: each tensor moves by ~lr x its own scale
        relative_already = {id(p) for p in module.tied_parameters()}
        params = [{"params": [p], "lr": lr if id(p) in relative_already else
                   lr * max(float(p.detach().pow(2).mean().sqrt()), RMS_FLOOR)} for p in params]
    optimizer = (torch.optim.Adam(params, lr=lr, weight_decay=options.weight_decay)
                 if options.optimizer is Optimizer.ADAM else
                 torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=options.weight_decay, nesterov=True))
    warmup = max(1, min(WARMUP_STEPS, total // 10))   # a trained model is near its optimum: Adam's first steps
    # (each weight moved by ~lr whatever its gradient) blow up a deep BN-folded net without a warmup

    def factor(step: int) -> float:
        decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) if options.schedule is Schedule.COSINE \
            else 1.0
        return min(1.0, (step + 1) / warmup) * decay

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    eval_every = options.eval_every or per_epoch
    labels = torch.from_numpy(data.labels) if data.labels is not None else None
    alpha = options.alpha if (teacher is not None and labels is not None) else (1.0 if teacher is not None else 0.0)

    losses: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int | None = None
    since_best = 0
    stopped_early = False
    if eval_data is not None and reference is not None and metric is not None:   # the start is a candidate too:
        best_value = _evaluate(module, eval_data, reference, options.batch_size)[metric.value]   # never worse
        best_step = 0
        evals.append((0, best_value))
    order = rng.permutation(len(data))
    cursor = 0
    start = time.perf_counter()
    want = [h.scores for h in student_heads if h.scores != h.output] + list(match)
    with stage("fine-tuning", total=total, unit="steps") as progress:
        for step in range(1, total + 1):
            if cursor + batch > len(order):
                order, cursor = rng.permutation(len(data)), 0
            index = np.sort(order[cursor:cursor + batch])
            cursor += batch
            module.train()
            feeds = to_torch({k: v[index] for k, v in data.inputs.items()})   # load_data cast them to the model's
            got = module(feeds, want)
            total_loss = torch.zeros(())
            for i, head in enumerate(student_heads):
                scores = got[head.scores]
                axis = _axis(head, scores.dim())
                if teacher is not None and scores.is_floating_point() and scores.dim() >= 2:
                    t = torch.from_numpy(targets[teacher_heads[i].scores][index])
                    kd = _kd(scores, t, axis, options.temperature) if t.shape == scores.shape else \
                        F.mse_loss(scores, t)
                    total_loss = total_loss + alpha * kd
                if labels is not None and i == 0 and alpha < 1:
                    task = _task(scores, labels[index], axis)
                    if task is not None:
                        total_loss = total_loss + (1 - alpha) * task
            for name in match:
                t = torch.from_numpy(targets[name][index])
                if t.shape != got[name].shape:
                    raise UsageError(f"`match` {name!r}: shapes differ ({list(got[name].shape)} in the student, "
                                     f"{list(t.shape)} in the teacher)")
                total_loss = total_loss + options.match_weight * F.mse_loss(got[name], t) / \
                    t.pow(2).mean().clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            optimizer.step()
            scheduler.step()
            if masks:
                with torch.no_grad():
                    for param, mask in masks:
                        param.mul_(mask)
            value = float(total_loss.detach())
            losses.append((step, value))
            detail = f"loss {value:.4f}"
            if eval_data is not None and reference is not None and metric is not None and \
                    (step % eval_every == 0 or step == total):
                score = _evaluate(module, eval_data, reference, options.batch_size)[metric.value]
                evals.append((step, score))
                better = best_value is None or (score < best_value if metric in LOWER_IS_BETTER
                                                else score > best_value)
                detail += f", {metric.value} {score:.4f}"
                if better:
                    best_value, best_step, since_best = score, step, 0
                    best_state = {k: v.detach().clone() for k, v in module.params.items()}
                    if on_improved is not None:
                        on_improved(write_back(student, module), step)
                else:
                    since_best += 1
                    if options.patience is not None and since_best >= options.patience:
                        progress.advance(detail)
                        stopped_early = True
                        break
            progress.advance(detail)
    seconds = time.perf_counter() - start
    if best_state is not None:
        with torch.no_grad():
            for k, v in best_state.items():
                module.params[k].copy_(v)
    # no evaluation beat the starting weights: they are the result
    result_model = student if best_step == 0 else write_back(student, module)
    after = metrics(reference, outputs(result_model, eval_data), eval_data.labels) \
        if eval_data is not None and reference is not None else None
    steps_done = len(losses)
    return FinetuneResult(result_model, metric.value if metric is not None else None, before, after, steps_done,
                          best_step, seconds, steps_done * batch / max(seconds, 1e-9), relative, tuple(trained),
                          tuple(sorted(frozen)), tuple(losses), tuple(evals), stopped_early,
                          {} if best_step == 0 else module.tied_codebooks(), match)
