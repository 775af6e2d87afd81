"""The SPLS projection by groups of batch elements (passes/spls_projection.py
`WholeProjection.group`, `PROJECTION_GROUPS`): at batch > 1 each group's
BPU projection is emitted at its first chunk, and the masked Q and the attention, lowered
beside the chain, are placed after what they depend on (`place "follow"`). Outputs are
bit-identical to the projection in one piece and to the reference interpreter; the program is
faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.passes import spls_projection
from spls_vit_case import compile_spls as _compile
from spls_vit_case import spls_vit_case

BATCH = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, str, np.ndarray]:
    return spls_vit_case(tmp_path_factory.mktemp("groups"), BATCH)


def test_grouped_projection_overlaps_the_attention_bit_identically(model, monkeypatch) -> None:
    images = {"pixel_values": model[2]}
    grouped = _compile(model)
    monkeypatch.setattr(spls_projection, "PROJECTION_GROUPS", 1)
    whole = _compile(model)
    after, before = grouped.simulate(images), whole.simulate(images)
    assert np.array_equal(after.outputs["logits"], before.outputs["logits"])
    reference = _compile(model, stage="sparsity").run(images)
    assert np.array_equal(after.outputs["logits"], reference["logits"])
    assert after.report["total"]["cycles"] < before.report["total"]["cycles"]
    # layer 0: the projection's BPUs (one per column tile) once per group, the second
    # group's after the first group's chunks (SIMILARITY), not all before the first chunk
    for compiled, groups in ((whole, 1), (grouped, 2)):
        names = [i.opcode_name for i in compiled.program().instructions]
        first_layer = names[:names.index("layernorm", names.index("similarity"))]
        bpus = [k for k, name in enumerate(first_layer) if name == "bpu"]
        assert len(bpus) % groups == 0 and len(bpus) >= groups
        later = bpus[len(bpus) // groups] if groups > 1 else bpus[-1]
        assert ("similarity" in first_layer[:later]) == (groups > 1)
