"""At batch 2 the SPLS prediction is projected one batch element per group
(passes/spls_projection.py `group_elements`): the masked Q linear takes one row tile per
group (lower_linear `_sequences_per_tile`), its ACC tiles clear of the attention lowered after
it (spls_scratch `chained_q_acc`), and `place "follow"` puts element 0's attention before
element 1's Q GEMM, so the MAC array runs it beside element 1's prediction. Outputs stay the
reference interpreter's bit for bit; without the pinned ACC tiles the attention waits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.passes import lower_linear
from spls_vit_case import compile_spls as _compile
from spls_vit_case import spls_vit_case

BATCH = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, str, np.ndarray]:
    return spls_vit_case(tmp_path_factory.mktemp("group_attention"), BATCH)


def _first_layer(program) -> list[tuple[str, int, str]]:
    """(opcode, row mask address, ONNX node) of layer 0's instructions."""
    names = [i.opcode_name for i in program.instructions]
    end = names.index("layernorm", names.index("similarity"))
    return [(names[k], program.instructions[k].fields.get("row_mask_addr", -1),
             getattr(program.debug.get(k), "node", "")) for k in range(end)]


def test_element_attention_runs_before_the_next_elements_q(model, monkeypatch) -> None:
    images = {"pixel_values": model[2]}
    compiled = _compile(model)
    layer = _first_layer(compiled.program())
    q_gemms = [k for k, (name, _, node) in enumerate(layer) if name == "gemm" and "query" in node]
    assert len(q_gemms) == BATCH  # one row tile per element
    first_mask = layer[q_gemms[0]][1]
    element0 = [k for k, (name, mask, _) in enumerate(layer)
                if name == "attn_qk" and mask == first_mask]
    assert element0 and max(element0) < q_gemms[1]
    run = compiled.simulate(images)
    reference = _compile(model, stage="sparsity").run(images)
    assert np.array_equal(run.outputs["logits"], reference["logits"])
    # ACC tiles from the allocator: part of the attention shares element 1's Q tile and waits
    monkeypatch.setattr(lower_linear, "chained_q_acc", lambda *args: None)
    unpinned = _compile(model)
    slower = unpinned.simulate(images)
    assert np.array_equal(slower.outputs["logits"], run.outputs["logits"])
    assert run.report["total"]["cycles"] < slower.report["total"]["cycles"]
