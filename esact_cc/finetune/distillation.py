"""SPLS-aware fine-tuning: the training loop of `esact-finetune` (docs/design.md section 6.1).

The student is the model with SPLS inserted (fp32 `transformer` IR + `insert-spls` with the
given setting), run by `TorchRunner`; the teacher is the same model dense, frozen, run once per
input by the reference interpreter. Per input the loss is the distillation term on the scored
output (`kl`: KL(softmax(teacher) || softmax(student)), for logits; `cosine`: 1 - cosine, for
embeddings) plus `label_weight` x cross-entropy (with `label_smoothing`) when labels are given.
After every optimizer step the SPLS module is rebuilt from the current weights (`insert-spls`
again), so the HLog weights of the prediction follow the training, as the compiler would make
them. With `validation` > 0 the last that many inputs are held apart: after each epoch the same
loss is measured on them with SPLS (no gradient), and the weights of the epoch where it is
lowest are the result, the untrained ones (epoch 0) included (early stopping on training
inputs, never on the inputs reported on).

Deterministic: seeded torch and numpy, one torch thread and one numpy BLAS thread, inputs in a
seeded order. One BLAS thread is also the fast choice: the prediction runs as many small numpy
GEMMs per input, and BLAS threads on a loaded machine fought over them (all-MiniLM-L6-v2 at 128
tokens, teacher and 2 steps of 8 sentences: 164 s with numpy's default pool, 71 s with one
thread, load 7-12).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esact_cc.finetune.layer_weights import LayerWeight, layer_weights, with_weights
from esact_cc.finetune.torch_required import import_torch
from esact_cc.ir_queries import io_names, main_function
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

DISTILL_LOSSES = ("kl", "cosine")


@dataclass
class FinetuneOptions:
    epochs: int = 4
    learning_rate: float = 3e-4
    batch: int = 16
    seed: int = 0
    distill: str = "kl"
    label_weight: float = 1.0
    label_smoothing: float = 0.0
    validation: int = 0
    """The last `validation` inputs score each epoch instead of training (0: the last epoch
    is the result)."""
    anchor: float = 0.0
    """Decoupled decay of every trained weight toward its ORIGINAL value (L2-SP): after each
    step w -= lr x anchor x (w - w0), as AdamW's weight decay pulls toward 0. 0: off. It bounds
    how far training moves the model on inputs it never sees (digits ViT: fine-tuning lost
    1.7-3.3 points of dense accuracy on unseen images without it)."""
    temperature: float = 1.0
    """`kl` at temperature T: KL(softmax(t/T) || softmax(s/T)) x T^2 (Hinton's distillation:
    above 1 the teacher's small logits, how alike it finds the classes, weigh in)."""
    dense_weight: float = 0.0
    """Mixed passes: the same loss on the student run WITHOUT SPLS, this many times, added to
    the SPLS pass's; the weights are trained to stay right dense as well. 0: SPLS pass only.
    The validation loss stays the SPLS pass's alone."""
    output: str | None = None
    """The scored model output (default: the last)."""

    def validate(self) -> None:
        from esact_cc.runtime.errors import CommandLineError

        if self.epochs < 1 or self.batch < 1:
            raise CommandLineError(f"--epochs and --batch must be >= 1 (got {self.epochs}, "
                                   f"{self.batch})")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise CommandLineError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(self.label_weight) and self.label_weight >= 0):
            raise CommandLineError(f"--label-weight must be >= 0, got {self.label_weight}")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise CommandLineError(f"--label-smoothing must be in [0, 1), got "
                                   f"{self.label_smoothing}")
        if not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise CommandLineError(f"--anchor must be >= 0, got {self.anchor}")
        if not (math.isfinite(self.dense_weight) and self.dense_weight >= 0):
            raise CommandLineError(f"--dense-weight must be >= 0, got {self.dense_weight}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise CommandLineError(f"--temperature must be > 0, got {self.temperature}")
        if self.temperature != 1.0 and self.distill != "kl":
            raise CommandLineError(f"--temperature {self.temperature} applies to --distill kl "
                                   f"only (got --distill {self.distill})")
        if self.validation < 0:
            raise CommandLineError(f"--validation must be >= 0, got {self.validation}")
        if self.distill not in DISTILL_LOSSES:
            raise CommandLineError(f"--distill must be one of {', '.join(DISTILL_LOSSES)}, "
                                   f"got {self.distill!r}")


@dataclass
class FinetuneResult:
    model: Any
    """The ONNX ModelProto with the trained weights."""
    weights: list[LayerWeight]
    frozen: list[str]
    epoch_losses: list[float] = field(default_factory=list)
    reused_fraction: list[float] = field(default_factory=list)
    """Per epoch: the reused share of the rows of the SPLS layers, over the inputs."""
    validation_losses: list[float] = field(default_factory=list)
    """With `validation` inputs: their mean loss with SPLS before training (index 0) and after
    each epoch."""
    best_epoch: int = 0
    """The epoch whose weights are the result (0: the untrained ones, no epoch did better)."""
    weight_drift: float = 0.0
    """How far the result moved: ||w - w0|| / ||w0|| over all trained weights."""


def _losses(torch: Any, student: Any, teacher: np.ndarray, labels: np.ndarray | None,
            options: FinetuneOptions) -> Any:
    """Per input [B]: the distillation term (+ label_weight x cross-entropy)."""
    s = student.reshape(student.shape[0], -1)
    t = torch.tensor(np.asarray(teacher, np.float32).reshape(s.shape))
    if options.distill == "kl":
        temp = options.temperature
        loss = torch.nn.functional.kl_div(torch.log_softmax(s / temp, -1),
                                          torch.log_softmax(t / temp, -1),
                                          reduction="none", log_target=True).sum(-1) * temp ** 2
    else:
        loss = 1.0 - torch.nn.functional.cosine_similarity(s, t, dim=-1)
    if labels is not None and options.label_weight > 0:
        loss = loss + options.label_weight * torch.nn.functional.cross_entropy(
            s, torch.from_numpy(labels.astype(np.int64)), reduction="none",
            label_smoothing=options.label_smoothing)
    return loss


class _SplsStudent:
    """The SPLS module rebuilt from the current weights; the torch runner over it."""

    def __init__(self, base: Any, base_store: WeightStore, pass_options: Mapping[str, Any],
                 weights: list[LayerWeight], params: Mapping[str, Any]):
        self.base, self.base_store = base, base_store
        self.pass_options = dict(pass_options)
        self.weights, self.params = weights, params
        self.cache: dict = {}
        """The weight-independent per-input values, shared by every step's runner."""
        self.dense_cache: dict = {}
        """The same for the dense module (`dense_runner`)."""

    def runner(self) -> Any:
        from esact_cc.dialect_registry import make_context
        from esact_cc.finetune.torch_runner import TorchRunner
        from esact_cc.pipeline import make_pass

        arrays = {name: self.base_store[name] for name in self.base_store}
        for w in self.weights:
            arrays[w.handle] = self.params[w.handle].detach().numpy().copy()
        store = WeightStore(arrays)
        module = self.base.clone()
        make_pass("insert-spls", store, **self.pass_options).apply(make_context(), module)
        return TorchRunner(module, store, self.params, self.cache)

    def dense_runner(self) -> Any:
        """The torch runner over the module without SPLS (its weights are `params`)."""
        from esact_cc.finetune.torch_runner import TorchRunner

        return TorchRunner(self.base, self.base_store, self.params, self.dense_cache)


def finetune(model_path: str | os.PathLike[str], samples: Sequence[dict],
             labels: np.ndarray | None, pass_options: Mapping[str, Any],
             options: FinetuneOptions, log: Callable[[str], None] | None = None
             ) -> FinetuneResult:
    """Train the layer weights of the ONNX file `model_path` with SPLS (`pass_options`:
    insert-spls's keyword options) on `samples` (model input dicts)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _finetune(model_path, samples, labels, pass_options, options, log)


def _finetune(model_path: str | os.PathLike[str], samples: Sequence[dict],
              labels: np.ndarray | None, pass_options: Mapping[str, Any],
              options: FinetuneOptions, log: Callable[[str], None] | None) -> FinetuneResult:
    import onnx

    from esact_cc.interpreter.reference_interpreter import run_module
    from esact_cc.pipeline import CompileOptions, compile_model

    torch = import_torch()
    options.validate()
    log = log or (lambda message: None)
    if not samples:
        raise CompileError("fine-tuning: no training inputs")
    torch.manual_seed(options.seed)
    torch.set_num_threads(1)
    shapes = {name: tuple(value.shape) for name, value in samples[0].items()}
    base, base_store = compile_model(str(model_path), "transformer",
                                     CompileOptions(input_shapes=shapes))
    names = io_names(main_function(base), results=True)
    output = options.output or names[-1]
    if output not in names:
        raise CompileError(f"model has no output '{output}' (outputs: {', '.join(names)})")
    # Whole, external data included, to be written back whole; the compile above has read
    # and validated the file through the frontend's checks first.
    proto = onnx.load(str(model_path))
    weights, frozen = layer_weights(base, base_store, proto)
    if frozen:
        log(f"esact-finetune: left frozen (no ONNX initializer of that name and shape): "
            f"{', '.join(frozen)}")
    params = {w.handle: torch.tensor(np.asarray(base_store[w.handle], np.float32),
                                     requires_grad=True) for w in weights}
    log(f"esact-finetune: {len(weights)} layer weights "
        f"({sum(int(p.numel()) for p in params.values())} values), {len(samples)} inputs, "
        f"output '{output}', teacher = the dense model")
    teacher = [np.asarray(run_module(base, s, base_store)[output]) for s in samples]
    student = _SplsStudent(base, base_store, pass_options, weights, params)
    train = _Split(samples, teacher, labels, range(len(samples) - options.validation))
    held = _Split(samples, teacher, labels, range(len(train.indices), len(samples)))
    if not train.indices:
        raise CompileError(f"fine-tuning: --validation {options.validation} leaves no "
                           f"training input of {len(samples)}")
    optimizer = torch.optim.AdamW(params.values(), lr=options.learning_rate, weight_decay=0.0)
    steps = options.epochs * math.ceil(len(train.indices) / options.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.learning_rate,
                                                   total_steps=steps,
                                                   pct_start=_warm_up_share(steps))
    rng = np.random.default_rng(options.seed)
    result = FinetuneResult(None, weights, frozen)
    original = {h: p.detach().clone() for h, p in params.items()}
    best = dict(original)
    if held.indices:
        result.validation_losses.append(held.mean_loss(torch, student.runner(), output, options))
        log(f"esact-finetune: validation loss before training "
            f"{result.validation_losses[0]:.4f}")
    for epoch in range(1, options.epochs + 1):
        total, reused, rows = 0.0, 0, 0
        for batch in train.batches(rng.permutation(train.indices), options.batch):
            runner = student.runner()
            optimizer.zero_grad()
            losses = train.losses(torch, runner, batch, output, options)
            _objective(torch, losses, train, student, batch, output, options).backward()
            total += float(losses.detach().sum())
            r, n = runner.reuse_counts()
            reused, rows = reused + r, rows + n
            optimizer.step()
            if options.anchor:
                _pull_toward(torch, params, original,
                             optimizer.param_groups[0]["lr"] * options.anchor)
            schedule.step()
        result.epoch_losses.append(total / len(train.indices))
        result.reused_fraction.append(reused / rows if rows else 0.0)
        message = (f"esact-finetune: epoch {epoch}/{options.epochs}: loss "
                   f"{result.epoch_losses[-1]:.4f}, reused rows {result.reused_fraction[-1]:.1%}")
        if held.indices:
            result.validation_losses.append(held.mean_loss(torch, student.runner(), output,
                                                           options))
            message += f", validation loss {result.validation_losses[-1]:.4f}"
        if not held.indices or result.validation_losses[-1] <= min(result.validation_losses):
            result.best_epoch = epoch
            best = {h: p.detach().clone() for h, p in params.items()}
        log(message)
    if held.indices:
        log(f"esact-finetune: keeping epoch {result.best_epoch} (lowest validation loss"
            f"{'; no epoch beat the untrained weights' if result.best_epoch == 0 else ''})")
    result.weight_drift = _drift(torch, best, original)
    log(f"esact-finetune: weights moved by {result.weight_drift:.2%} of their norm")
    result.model = with_weights(proto, weights, {h: p.numpy() for h, p in best.items()})
    return result


def _objective(torch: Any, losses: Any, train: _Split, student: _SplsStudent, batch: np.ndarray,
               output: str, options: FinetuneOptions) -> Any:
    """The step's loss: the SPLS pass's mean (`losses`), plus `dense_weight` x the mean of
    the pass without SPLS (mixed passes)."""
    if not options.dense_weight:
        return losses.mean()
    dense = train.losses(torch, student.dense_runner(), batch, output, options)
    return losses.mean() + options.dense_weight * dense.mean()


def _warm_up_share(steps: int) -> float:
    """The one-cycle schedule's warm-up share: 10%, but at least 2 steps from 4 steps on.
    At 10 steps 10% is a warm-up ending at step 0, which OneCycleLR divides by (10 steps:
    --epochs 1 on 160 inputs at batch 16 crashed with ZeroDivisionError)."""
    return max(0.1, 2.0 / steps) if steps >= 4 else 0.1


def _pull_toward(torch: Any, params: Mapping[str, Any], original: Mapping[str, Any],
                 rate: float) -> None:
    """w -= rate x (w - w0) for every trained weight (`FinetuneOptions.anchor`)."""
    with torch.no_grad():
        for handle, param in params.items():
            param.sub_(rate * (param - original[handle]))


def _drift(torch: Any, weights: Mapping[str, Any], original: Mapping[str, Any]) -> float:
    moved = sum(float(torch.sum((weights[h] - w0) ** 2)) for h, w0 in original.items())
    norm = sum(float(torch.sum(w0 ** 2)) for w0 in original.values())
    return math.sqrt(moved / norm) if norm > 0 else 0.0


@dataclass
class _Split:
    """Inputs `indices` of the samples, with their teacher outputs and labels."""

    samples: Sequence[dict]
    teacher: Sequence[np.ndarray]
    labels: np.ndarray | None
    indices: range

    @staticmethod
    def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
        return [order[start:start + size] for start in range(0, len(order), size)]

    def losses(self, torch: Any, runner: Any, batch: np.ndarray, output: str,
               options: FinetuneOptions) -> Any:
        """Per input of `batch` (sample indices, also the runner's cache keys): the loss."""
        out = runner.run_batch([self.samples[i] for i in batch], batch.tolist())[output]
        if not isinstance(out, torch.Tensor):
            raise CompileError(f"fine-tuning: output '{output}' does not depend on any layer "
                               "weight")
        return _losses(torch, out, np.concatenate([self.teacher[i] for i in batch]),
                       None if self.labels is None else self.labels[batch], options)

    def mean_loss(self, torch: Any, runner: Any, output: str, options: FinetuneOptions
                  ) -> float:
        with torch.no_grad():
            return sum(float(self.losses(torch, runner, batch, output, options).sum())
                       for batch in self.batches(np.asarray(self.indices), options.batch)
                       ) / len(self.indices)
