"""Q, K and V handed to an INT8 attention already quantized (passes/attention_inputs.py): the
Q / K / V linears QUANTize each output tile with the attention's multiplier and STORE the
INT8 codes only; the attention LOADs them straight into ABUF. Same codes, so the binary's
outputs are the interpreter's bit for bit, with a quarter of the hand-off's DRAM bytes.

A small BERT-style encoder (hidden 64, 4 heads, 32 tokens, padding), through DRAM
(keep-on-chip off: with it these small tiles stay in VBUF and are QUANTized there).
"""

from __future__ import annotations

import encoder_graphs
import numpy as np
import pytest

from esact_cc import api

SEQ, HIDDEN = 32, 64
MODEL = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=4, ffn=128, seed=3)
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
PROJECTIONS = ("query", "key", "value")


SCHEMES = {"dense": {}, "spls": {"sparsity": "spls",
                                  "sparsity_option": ["attention=topk", "threshold=1.01"]}}


@pytest.fixture(scope="module", params=list(SCHEMES))
def compiled(request) -> api.CompiledModel:
    return api.compile(MODEL, stage="esact", keep_on_chip=False, **SCHEMES[request.param])


def _dma(compiled: api.CompiledModel, opcode: str, where: str) -> list:
    """(instruction, its debug node) of the LOADs or STOREs whose node names `where`."""
    program = compiled.program()
    return [(ins, program.debug[i].node) for i, ins in enumerate(program.instructions)
            if ins.opcode_name == opcode and where in program.debug[i].node]


def test_projections_store_int8_codes_only(compiled: api.CompiledModel) -> None:
    for name in PROJECTIONS:
        stores = [ins for ins, _ in _dma(compiled, "store", f"/{name}/")]
        # one byte per element, every element once (FP32 ones would be 4 x SEQ x HIDDEN)
        assert stores and sum(i.fields["rows"] * i.fields["cols"] for i in stores) == \
            SEQ * HIDDEN
        assert all(i.fields["buf"] == 1 for i in stores)  # ABUF: the QUANTized codes


def test_attention_loads_the_codes_without_quantizing(compiled: api.CompiledModel) -> None:
    program = compiled.program()
    names = [i.opcode_name for i in program.instructions]
    # the attention's instructions (the SPLS prediction's carry its location too: before them)
    first = max([k for k, name in enumerate(names) if name == "bpu_scores"], default=0)
    attention = {i for i, e in program.debug.items() if "Softmax" in e.node and i > first}
    loads = [program.instructions[i] for i in sorted(attention)
             if names[i] == "load" and program.instructions[i].fields["buf"] == 1]
    # Q, K and V: SEQ x HIDDEN codes each, LOADed into ABUF per head group
    assert sum(i.fields["rows"] * i.fields["cols"] for i in loads) == 3 * SEQ * HIDDEN
    quants = [i for i in attention if names[i] == "quant"]
    assert not quants  # only P is quantized there (QUANT_ROWS)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_binary_equals_the_interpreter(scheme: str) -> None:
    options = SCHEMES[scheme]
    binary = api.compile(MODEL, stage="esact", keep_on_chip=False, **options)
    expected = api.compile(MODEL, stage="sparsity", **options).run(INPUTS)["last_hidden_state"]
    np.testing.assert_array_equal(binary.simulate(INPUTS).outputs["last_hidden_state"],
                                  expected)
