"""SPLS-aware fine-tuning: the training loop of `esact-finetune` (docs/design.md section 6.1).

The student is the model with SPLS inserted (fp32 `transformer` IR + `insert-spls` with the
given setting), run by `TorchRunner`; the teacher is the same model dense, frozen, run once per
input by the reference interpreter. Per input the loss is the distillation term on the scored
output (`kl`: KL(softmax(teacher) || softmax(student)), for logits; `cosine`: 1 - cosine, for
embeddings) plus `label_weight` x cross-entropy when labels are given. After every optimizer
step the SPLS module is rebuilt from the current weights (`insert-spls` again), so the HLog
weights of the prediction follow the training, as the compiler would make them.

Deterministic: seeded torch and numpy, one torch thread, inputs in a seeded order.
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


def _losses(torch: Any, student: Any, teacher: np.ndarray, labels: np.ndarray | None,
            options: FinetuneOptions) -> Any:
    """Per input [B]: the distillation term (+ label_weight x cross-entropy)."""
    s = student.reshape(student.shape[0], -1)
    t = torch.tensor(np.asarray(teacher, np.float32).reshape(s.shape))
    if options.distill == "kl":
        loss = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1),
                                          reduction="none", log_target=True).sum(-1)
    else:
        loss = 1.0 - torch.nn.functional.cosine_similarity(s, t, dim=-1)
    if labels is not None and options.label_weight > 0:
        loss = loss + options.label_weight * torch.nn.functional.cross_entropy(
            s, torch.from_numpy(labels.astype(np.int64)), reduction="none")
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


def finetune(model_path: str | os.PathLike[str], samples: Sequence[dict],
             labels: np.ndarray | None, pass_options: Mapping[str, Any],
             options: FinetuneOptions, log: Callable[[str], None] | None = None
             ) -> FinetuneResult:
    """Train the layer weights of the ONNX file `model_path` with SPLS (`pass_options`:
    insert-spls's keyword options) on `samples` (model input dicts)."""
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
    optimizer = torch.optim.AdamW(params.values(), lr=options.learning_rate, weight_decay=0.0)
    steps = options.epochs * math.ceil(len(samples) / options.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.learning_rate,
                                                   total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(options.seed)
    result = FinetuneResult(None, weights, frozen)
    for epoch in range(options.epochs):
        order = rng.permutation(len(samples))
        total, reused, rows = 0.0, 0, 0
        for start in range(0, len(order), options.batch):
            batch = order[start:start + options.batch]
            runner = student.runner()
            optimizer.zero_grad()
            out = runner.run_batch([samples[i] for i in batch], batch.tolist())[output]
            if not isinstance(out, torch.Tensor):
                raise CompileError(f"fine-tuning: output '{output}' does not depend on any "
                                   "layer weight")
            losses = _losses(torch, out, np.concatenate([teacher[i] for i in batch]),
                             None if labels is None else labels[batch], options)
            losses.mean().backward()
            total += float(losses.detach().sum())
            r, n = runner.reuse_counts()
            reused, rows = reused + r, rows + n
            optimizer.step()
            schedule.step()
        result.epoch_losses.append(total / len(samples))
        result.reused_fraction.append(reused / rows if rows else 0.0)
        log(f"esact-finetune: epoch {epoch + 1}/{options.epochs}: loss "
            f"{result.epoch_losses[-1]:.4f}, reused rows {result.reused_fraction[-1]:.1%}")
    result.model = with_weights(proto, weights, {h: p.detach().numpy() for h, p in params.items()})
    return result
