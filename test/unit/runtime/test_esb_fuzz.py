"""Fuzz the loader and the functional model with >= 10,000 mutated and truncated binaries.

Seeded mutators: raw bit flips and truncation (caught by the checksum or the header), and
structure-aware mutations that re-seal the file (rebuilt section table and checksum) so that
they reach the instruction decoder, the field and token checks, the META schema checks, the
config checks and the execution of the program. Every sample must end in an EsactError or a
completed run; allocations (tracemalloc peak) stay under a bound derived from the file size
and the config (measured on every MEMORY_CHECK_EVERY-th sample).
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from collections import Counter

import numpy as np
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.esb import (
    CHECKSUM_BYTES,
    HEADER,
    SECTION_ENTRY,
    DataSegment,
    DebugEntry,
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
    parse_esb,
    serialize_esb,
)
from esact_cc.runtime.esb_checksum import checksum
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import config_from_dict, load_config
from esact_cc.runtime.isa import INSTRUCTION_BYTES, Buffer, Instruction
from onnx import TensorProto, helper

SAMPLES = 10_000
BASE = load_config()
RAW = BASE.to_dict()
# Small memories: a tight allocation bound, and mutated sizes cannot make samples slow.
RAW["dram"]["capacity_bytes"] = 1 << 20
for _name in ("weight_buffer", "activation_buffer", "accumulator_buffer", "vector_buffer",
              "mask_buffer"):
    RAW["sram"][_name] = 1 << 16
MEMORY_CHECK_EVERY = 4  # tracemalloc slows Python ~3x: trace every 4th sample
CFG = config_from_dict(RAW, "fuzz")
SRAM_BYTES = sum(getattr(CFG, a) for a in ("weight_buffer_bytes", "activation_buffer_bytes",
                                            "accumulator_buffer_bytes", "vector_buffer_bytes",
                                            "mask_buffer_bytes"))


def allocation_bound(file_size: int) -> int:
    # File copies and parsed sections, the DRAM image (<= capacity), the buffers, and
    # float64 temporaries of buffer-sized operands.
    return 16 * file_size + 2 * CFG.dram_capacity_bytes + 12 * SRAM_BYTES + (8 << 20)


def f32_bytes(values: np.ndarray) -> bytes:
    return np.asarray(values, "<f4").tobytes()


def attention_program() -> Program:
    """A small program touching every SFU/SPLS/attention instruction (valid, runs)."""
    rng = np.random.default_rng(0)
    vectors = np.concatenate([1 + 0.1 * rng.standard_normal(16), 0.1 * rng.standard_normal(16),
                              np.ones(16), np.full(16, 0.01)])
    levels = rng.choice([0, 1, 2, 3, 4, 6, 8], (16, 16)) * rng.choice([-1, 1], (16, 16))
    i = Instruction.make
    body = [
        i("load", buf=Buffer.VBUF, sram_addr=0, dram_addr=0, rows=8, cols=16),
        i("load", buf=Buffer.VBUF, sram_addr=1000, dram_addr=1024, rows=1, cols=64),
        i("load", buf=Buffer.WBUF, sram_addr=0, dram_addr=2048, rows=16, cols=16),
        i("layernorm", dst_addr=256, src_addr=0, rows=8, cols=16, gamma_addr=1000,
          beta_addr=1016, eps=1e-5),
        i("hlog", dst_buf=Buffer.ABUF, dst_addr=0, src_addr=256, rows=8, cols=16, bits=5,
          dynamic=1, scale_out_addr=2000),
        i("bpu", dst_addr=0, a_buf=Buffer.ABUF, a_addr=0, b_buf=Buffer.WBUF, b_addr=0, m=8,
          k=16, n=16),
        i("dequant", dst_addr=300, src_addr=0, rows=8, cols=16, scale_addr=1032,
          scalar_count=1, scalar_addr=2000),
        i("hlog", dst_buf=Buffer.ABUF, dst_addr=200, src_addr=300, rows=8, cols=16, bits=5,
          dynamic=1, scale_out_addr=2001),
        i("bpu", dst_addr=512, a_buf=Buffer.ABUF, a_addr=200, b_buf=Buffer.ABUF, b_addr=200,
          m=8, k=16, n=8, transpose_b=1),
        i("topk", dst_addr=0, src_buf=Buffer.ACC, src_addr=512, rows=8, cols=8, k=3, causal=1),
        i("dequant", dst_addr=400, src_addr=512, rows=8, cols=8, scale_addr=1032),
        i("softmax", dst_addr=500, src_addr=400, rows=8, cols=8, scale=0.01, has_elem_mask=1,
          elem_mask_addr=0),
        i("similarity", map_addr=100, key_mask_addr=200, spa_addr=0, has_prob=1, prob_addr=500,
          heads=1, length=8, keys=8, window=4, k=3, threshold=0.5, mode=1),
        i("quant", dst_addr=300, src_addr=256, rows=8, cols=16, mult=20.0),
        i("attn_qk", scores_addr=600, q_addr=300, k_addr=300, lq=8, lk=8, d=16, has_mask=1,
          mask_addr=0),
        i("quant", dst_addr=400, src_addr=500, rows=8, cols=8, mult=127.0),
        i("attn_pv", out_addr=700, p_addr=400, v_addr=300, lq=8, lk=8, d=16, has_mask=1,
          mask_addr=0),
        i("requant", dst_addr=600, src_addr=700, rows=8, cols=16, mult_addr=1048),
        i("gemm", acc_addr=900, a_addr=600, w_addr=0, m=8, k=16, n=16, has_row_mask=1,
          row_mask_addr=200),
        i("dequant", dst_addr=600, src_addr=900, rows=8, cols=16, scale_addr=1048),
        i("gelu", dst_addr=800, src_addr=600, rows=8, cols=16),
        i("add", dst_addr=900, a_addr=800, b_addr=0, rows=8, cols=16),
        i("scatter_rows", buf=Buffer.VBUF, dst_addr=1100, src_addr=900, rows=8, cols=16,
          map_addr=100),
        i("gather_rows", buf=Buffer.VBUF, dst_addr=1300, src_addr=1100, rows=8, cols=16,
          map_addr=100),
        i("store", buf=Buffer.VBUF, sram_addr=1100, dram_addr=4096, rows=8, cols=16),
        i("halt"),
    ]
    return Program(body, CFG.hash,
                   io=[IODescriptor("x", (8, 16), "float32", 0, "input"),
                       IODescriptor("y", (8, 16), "float32", 4096, "output")],
                   data_segments=[DataSegment("vectors", 1024, f32_bytes(vectors)),
                                  DataSegment("w_hlog", 2048, levels.astype(np.int8).tobytes())],
                   debug={13: DebugEntry("/layer.0/attn/MatMul", 0, "qk"),
                          18: DebugEntry("/layer.0/ffn/MatMul", 0, "ffn1")})


def fixture_like_program() -> Program:
    text = (__import__("pathlib").Path(__file__).parents[2] / "fixtures" / "asm"
            / "linear_requant_softmax.s").read_text()
    from esact_cc.runtime.assembly import assemble

    return assemble(text, CFG.hash)


def host_program() -> Program:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "a"], ["c"], name="square")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Program([Instruction.make("host", segment=0), Instruction.make("halt")], CFG.hash,
                   io=[IODescriptor("a", (4,), "float32", 0, "input"),
                       IODescriptor("c", (4,), "float32", 64, "output")],
                   host_segments=[HostSegment(model.SerializeToString(),
                                              (TensorDesc("a", (4,), "float32", 0),),
                                              (TensorDesc("c", (4,), "float32", 64),))])


# ----------------------------------------------------------------------------- mutators


def split(data: bytes) -> tuple[bytes, list[int], list[bytes]]:
    entries = [SECTION_ENTRY.unpack_from(data, HEADER.size + i * SECTION_ENTRY.size)
               for i in range(4)]
    return data[:HEADER.size], [e[0] for e in entries], [data[e[2]:e[2] + e[3]]
                                                         for e in entries]


def join(header: bytes, kinds: list[int], payloads: list[bytes]) -> bytes:
    offset = HEADER.size + len(payloads) * SECTION_ENTRY.size
    table = b""
    for kind, payload in zip(kinds, payloads):
        table += SECTION_ENTRY.pack(kind, 0, offset, len(payload))
        offset += len(payload)
    head = bytearray(header)
    struct.pack_into("<Q", head, 48, offset + CHECKSUM_BYTES)
    body = bytes(head) + table + b"".join(payloads)
    return body + checksum([body])


def reseal(data: bytes) -> bytes:
    body = data[:-CHECKSUM_BYTES] if len(data) > CHECKSUM_BYTES else data
    return body + checksum([body])


def flip_bits(rng: np.random.Generator, data: bytes, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        if out:
            out[rng.integers(len(out))] ^= 1 << int(rng.integers(8))
    return bytes(out)


INTERESTING = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**62, 2**70, -(2**40), 1.5, "x", None, [],
               {}, True, [1 << 40, 1 << 40], "\u0000\udcff"[:1]]


def mutate_json(rng: np.random.Generator, value):
    """Replace one random leaf (or container) of a JSON value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[rng.integers(len(value))]
        return {**value, key: mutate_json(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.8:
        k = int(rng.integers(len(value)))
        choice = rng.random()
        if choice < 0.1:
            return value[:k] + value[k + 1:]
        if choice < 0.2:
            return value + [value[k]]
        return value[:k] + [mutate_json(rng, value[k])] + value[k + 1:]
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + int(rng.integers(-3, 4)) * (1 << int(rng.integers(0, 40)))
    return INTERESTING[rng.integers(len(INTERESTING))]


def mutate(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    kind = int(rng.integers(9))
    if kind == 0:
        return "raw_flip", flip_bits(rng, data, int(rng.integers(1, 9)))
    if kind == 1:
        return "truncate", data[:rng.integers(len(data))]
    if kind == 2:
        return "raw_flip_resealed", reseal(flip_bits(rng, data[:-CHECKSUM_BYTES],
                                                     int(rng.integers(1, 4))) + bytes(32))
    header, kinds, payloads = split(data)
    if kind in (3, 4, 5):  # instruction fields: the richest target
        text = bytearray(payloads[0])
        n = len(text) // INSTRUCTION_BYTES
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(n))
            bit = int(rng.integers(8, 256 if rng.random() < 0.2 else 160))
            text[k * INSTRUCTION_BYTES + bit // 8] ^= 1 << (bit % 8)
        payloads[0] = bytes(text)
        return "text_fields", join(header, kinds, payloads)
    if kind == 6:
        meta = json.loads(payloads[1])
        payloads[1] = json.dumps(mutate_json(rng, meta)).encode()
        return "meta_json", join(header, kinds, payloads)
    if kind == 7:
        k = int(rng.integers(4))
        section = bytearray(payloads[k])
        op = rng.random()
        if op < 0.4 and section:
            section = bytearray(flip_bits(rng, bytes(section), int(rng.integers(1, 5))))
        elif op < 0.7:
            section = section[:rng.integers(len(section) + 1)]
        else:
            pos = int(rng.integers(len(section) + 1))
            section[pos:pos] = rng.bytes(int(rng.integers(1, 40)))
        payloads[k] = bytes(section)
        return f"section_{k}", join(header, kinds, payloads)
    text = payloads[0]  # reorder / duplicate / drop whole instructions
    words = [text[i:i + INSTRUCTION_BYTES] for i in range(0, len(text), INSTRUCTION_BYTES)]
    a, b = (int(x) for x in rng.integers(len(words), size=2))
    choice = rng.random()
    if choice < 0.4:
        words[a], words[b] = words[b], words[a]
    elif choice < 0.7:
        words.insert(a, words[b])
    else:
        del words[a]
    payloads[0] = b"".join(words)
    return "text_shuffle", join(header, kinds, payloads)


def inputs_for(program: Program) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feed = {}
    for d in program.inputs:
        if d.nbytes > CFG.dram_capacity_bytes:
            feed[d.name] = np.zeros(0, np.float32)  # rejected by the capacity check anyway
        elif np.dtype(d.dtype).kind == "f":
            feed[d.name] = rng.standard_normal(d.shape).astype(d.dtype)
        else:
            feed[d.name] = np.zeros(d.shape, d.dtype)
    return feed


def run_sample(data: bytes) -> str:
    try:
        program = parse_esb(data)
    except EsactError:
        return "rejected_by_loader"
    try:
        execute(program, inputs_for(program), CFG)
    except EsactError:
        return "rejected_by_model"
    return "ran"


def test_originals_run() -> None:
    for program in (attention_program(), fixture_like_program(), host_program()):
        data = serialize_esb(program)
        assert run_sample(data) == "ran"


def test_fuzz_mutated_and_truncated_binaries() -> None:
    rng = np.random.default_rng(20261128)
    originals = [serialize_esb(attention_program()), serialize_esb(fixture_like_program()),
                 serialize_esb(host_program())]
    weights = [0.6, 0.35, 0.05]  # host segments are slow to load in onnxruntime
    outcomes: Counter[str] = Counter()
    by_mutator: Counter[str] = Counter()
    failures: list[str] = []
    worst_ratio = 0.0
    slowest = 0.0
    try:
        for sample in range(SAMPLES):
            original = originals[rng.choice(3, p=weights)]
            mutator, data = mutate(rng, original)
            traced = sample % MEMORY_CHECK_EVERY == 0
            if traced:
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            try:
                outcome = run_sample(data)
            except Exception as exc:  # noqa: BLE001 - anything not an EsactError is a bug
                failures.append(f"sample {sample} ({mutator}): {type(exc).__name__}: {exc}")
                continue
            finally:
                if traced:
                    peak = tracemalloc.get_traced_memory()[1] - base
                    tracemalloc.stop()
                    worst_ratio = max(worst_ratio, peak / allocation_bound(len(data)))
            slowest = max(slowest, time.perf_counter() - start)
            outcomes[outcome] += 1
            by_mutator[f"{mutator}:{outcome}"] += 1
    finally:
        tracemalloc.stop()
    print(f"\nfuzz outcomes {dict(outcomes)}; worst peak/bound {worst_ratio:.3f}; "
          f"slowest sample {slowest * 1e3:.1f} ms")
    print(dict(sorted(by_mutator.items())))
    assert not failures, "\n".join(failures[:10])
    assert sum(outcomes.values()) == SAMPLES
    assert worst_ratio <= 1.0
    # The structure-aware mutators reach past the checksum into the model.
    assert outcomes["rejected_by_model"] > 0 and outcomes["ran"] > 0
