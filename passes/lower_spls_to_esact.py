"""Lowering of the SPLS prediction chain (`PREDICTION_RULES`, part of lower-to-esact's rules).

The masked linears and attentions that read its masks are lowered by `passes/lower_linear.py`
(the one mask-aware rule each); this module registers the MBUF regions it leaves the masks in
(`Lowering.masks`), and says with placement directives where the linears lowered beside it go
(`esact-order` applies them: `passes/prediction_overlap.py`).

The prediction chain that `insert-spls` emits per layer,
    hlog_quantize(X) -> predict_attention -> topk -> local_similarity,
is lowered as ONE unit at the `spls.hlog_quantize` op (the other three are marked fused), with
every intermediate on chip (docs/design.md section 6), in two phases:
1. Projection, over all rows: LOAD X -> HLOG (dynamic scale per batch element) -> per
   column tile of [W_Q | W_K]: LOAD HLog(W) codes, BPU (X^ W^, shift-adds), DEQUANT
   (* s_W per column * s_X, + bias) -> HLOG of Q^ and of K^ per batch element (dynamic scales s_Q, s_K). The HLog
   scales span all rows of an element, so this phase cannot be split by rows.
2. Progressive prediction, per row chunk (lower-to-esact's `spls-chunk-rows`, default the
   MAC array's rows): per head BPU_SCORES: the BPU's Q^_h rows of the chunk x K^_h^T, its
   products straight into the score path (* scale * s_Q * s_K, + mask, ranked -> SPA rows in
   MBUF; cosprob: softmax -> prob rows in VBUF; or the integer PAM ranked when there is
   neither mask nor cosprob; runtime/isa_prediction_scores.py), never through ACC; SIMILARITY with first_row / row_count = the
   chunk: it decides the chunk's rows from the reuse-map entries of the earlier rows (still
   in MBUF) and their SPA / prob rows, which is exactly the whole-row decision (the window
   only looks back), and writes the chunk's part of the reuse map and computed-row mask (and
   ORs its keys into the key mask).
The masks stay in MBUF (the dense lowering does not use MBUF) until the layer's last masked op
is lowered. HLOG/BPU/BPU_SCORES/SIMILARITY run on the predict queue (the projection's
DEQUANT on the SFU queue; all of component `predict`); `schedule` derives the tokens from the memory
operands, so what overlaps what follows from where the consumers' tiles and instructions are:
- K / V (`attention=dense`: dense linears of X, independent of the prediction) are lowered
  beside phase 1 (`Lowering.lower_aside`: while every prediction region is reserved, so their
  tiles share none; their row tiles shrink to the ABUF the projection leaves, lower_linear)
  and spread over its BPU tiles by estimated time (`interleave`): the compute
  queue runs them while the BPU works, and their loads do not wait behind the prediction's.
- The masked Q linear of X is lowered beside phase 2 with one GEMM per group of whole chunks
  that fits the MAC rows (`_gemm_row_tiles`), placed after the chain: GEMM c waits only for
  the SIMILARITY of its last chunk, so the MAC
  array computes chunk c's Q rows while the BPU predicts chunk c + 1.
- `dense-prefix` (insert-spls) leaves Q, or Q and the attention, dense: they are lowered with
  K / V beside phase 1, and with the attention there the O linear, its residual ADD and the
  norm after it run per group of chunks inside phase 2 (`passes/spls_output_groups.py`).
  Otherwise the attention, O and FFN need all rows (K / V of every key, then the attention
  output) and follow the chain.

Masked ops (`passes/lower_linear.py`, `passes/lower_attention.py`): a reused row's own residual stream gets the
representative's sublayer output through SCATTER_ROWS before the fused residual add (docs/design.md
section 6 step 5).

Additive attention masks (padding): one row per batch element and head is loaded into VBUF
and given to BPU_SCORES (`add_mask`: FP32 PAM + mask is ranked, masked keys last, and
normalized) and to the SOFTMAX of the attention. A per-query mask [.., L, L] (e.g. BERT's
expanded padding mask) is added to the FP32 PAM by BPU_SCORES (its rows: `add_mask_rows`)
and ADDed to the attention scores: the same float32 sums, so both forms
rank and normalize as the reference does, rows whose every key is masked included
(docs/design.md section 3, "Masks").

Long sequences (the ring form, `Chain.ring`): when the H x L x L SPA of every batch element
does not fit MBUF beside the masks, or the FP32 PAM of all heads half of VBUF, only one chunk's
SPA / PAM rows [H, n, L] are on chip. SIMILARITY (has_ring) then reads the references of
earlier chunks from a ring of min(window, L) slots of [H, L] (SPA rows in MBUF for overlap,
prob rows in VBUF for cosprob) and writes its chunk's computed rows into it: the window only
ever holds the last `window` computed rows, so the decisions are those of the whole-row form
exactly (runtime/spls_kernels.py `local_similarity_ring`). What persists per batch element is
the reuse map, row mask and key mask (3L + H L bytes). A sparse attention (attention=topk)
reads SPA later: each chunk's SPA rows are STOREd to a DRAM scratch tensor and the attention
LOADs each head's rows (`MaskTiles.spa_dram`); that traffic is charged as any LOAD / STORE.
The chunk is `spls-chunk-rows` (default the MAC rows) capped by what fits (`passes/spls_chain_fit.py`;
an explicit value that does not fit is an error). Sequences whose SPA fits keep the whole-row
program. Where the K^ codes of every key do not stay on chip, or the cosprob ring and a chunk
row exceed half of VBUF (BERT-base at 2048 tokens: window 8), the block form
(passes/spls_block_prediction.py) predicts blocks of rows head by head, spills their SPA /
prob rows to DRAM and decides one chunk at a time from them LOADed back.

No reuse possible (`passes/spls_no_reuse.py` erased the similarity: threshold above every
score or window 0, with a top-k attention): the chain only makes SPA. No SIMILARITY, reuse
map, row mask or key mask; the layer's Q, K and V are plain linears lowered beside the
projection (in the ring form Q beside the score path: `spls_beside_chain.beside_scores`); in
the ring form each head's chunk SPA rows are STOREd as soon as ranked, so MBUF holds those of
as many heads as fit (at least `SPA_HEAD_SLOTS`, passes/spls_chain_fit.py) and a chunk has the
MAC rows (BERT-base 512: 32-row chunks, where all 12 heads' rows allowed 10).

Grouped-query attention: K^ has the K heads' columns only (Nk = kv_heads x head_dim) and query
head h's BPU reads K^ head h // group. Phase 2 reads the K^ codes of every key once per chunk:
from ABUF, or, when they do not fit there (BERT-base at 2048 tokens), LOADed back per group of
K heads from a DRAM scratch written once per batch element (`passes/spls_key_codes.py`;
L x Nk bytes per chunk, or per block in the block form, charged as any LOAD).

Limits (CompileError): HLog bits <= 7 (codes in int8 buffers), the L rows of one batch element
must fit one ABUF tile, one SPA / PAM row of every head must fit beside the ring, a dynamic HLog
scale only (what insert-spls emits); the projection's regions (X^, Q^, K^ codes, two code
slots) and the K / V / Q tiles lowered beside them must fit the buffers together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from esact_cc.dialects import spls, transformer
from esact_cc.dialects.lowering import CYCLES_ATTR
from esact_cc.passes.attention_shared_mask import hand_over_block
from esact_cc.passes.lower_masked_inputs import fail, plan_masked_inputs
from esact_cc.passes.lowering_state import (
    DramTensor,
    Lowering,
    MaskTiles,
    Rule,
)
from esact_cc.passes.spls_beside_chain import (
    beside_scores,
    chunk_consumers,
    independent_projections,
    lower_beside_scores,
    lower_early,
    place_generation,
    place_independent,
    score_cycles,
)
from esact_cc.passes.spls_block_prediction import BlockSpill, block_codes, block_rows, emit_block
from esact_cc.passes.spls_chain_fit import (
    chunk_rows,
    projection_fits,
    ring_chunk_rows,
    whole_rows_fit,
)
from esact_cc.passes.spls_chain_masks import chunk_mask_rows, mask_slots
from esact_cc.passes.spls_key_codes import HeadKeys, key_codes
from esact_cc.passes.spls_output_groups import NoOutputGroups, OutputGroups
from esact_cc.passes.spls_projection import WholeProjection, hlog_input
from esact_cc.passes.spls_streamed_projection import StreamedProjection
from esact_cc.runtime import spls_kernels
from esact_cc.runtime.isa import MAX_INT8_HLOG_BITS, Buffer, SimilarityMode
from xdsl.ir import Operation, SSAValue

PREDICT = "predict"
SIMILARITY_MODES = {"overlap": SimilarityMode.OVERLAP, "cosprob": SimilarityMode.COSPROB}


# ----------------------------------------------------------------------------- prediction


def _single_user(value: SSAValue, kind: type[Operation], what: Operation) -> Operation:
    users = [u.operation for u in value.uses]
    if len(users) != 1 or not isinstance(users[0], kind):
        raise fail(what, f"expected exactly one {kind.name} user (the insert-spls chain)")  # type: ignore[attr-defined]
    return users[0]


@dataclass
class Chain:
    """One layer's prediction chain (hlog_quantize -> predict_attention -> topk ->
    local_similarity), its sizes and the on-chip regions its steps share."""

    op: spls.HLogQuantizeOp
    predict: spls.PredictAttentionOp
    topk: spls.TopKOp
    sim: spls.LocalSimilarityOp | None
    """None when no row can be reused (passes/spls_no_reuse.py erased it): the chain only
    makes a top-k attention's SPA."""
    keep_spa: bool
    """Whether a sparse attention reads SPA (it then stays in MBUF with the other masks)."""
    x: DramTensor
    heads: int
    width: int
    chunks: list[tuple[int, int]]
    streamed: bool = False
    """The projection runs over row tiles (`StreamedProjection`): all rows do not fit."""
    ring: bool = False
    """Long-sequence form: only a chunk's SPA / PAM rows on chip, the SIMILARITY references in
    a ring (`passes/spls_chain_fit.py`), SPA spilled to DRAM per chunk when an attention reads it."""
    regions: dict[str, int] = field(default_factory=dict)
    """On-chip addresses by name (xc, sx, pam, qc, kc, sqk, pam_scale, real, spa)."""
    projection_start: int = 0
    """The stream label before the projection: the first chunks' mask rows are LOADed from
    there on (passes/spls_chain_masks.py)."""
    mask_block_reader: int | None = None
    """The DRAM address of the mask when `mask_slots` is one slot of its whole block, handed
    to the attention after the chain (passes/spls_chain_masks.py)."""
    mask_slots: list[int] = field(default_factory=list)
    """Two VBUF slots for a chunk's rows of a per-query mask (ring form), held for the whole
    chain (`lower_prediction`): alternating by head, or by chunk when every head reads the
    same mask block (BERT's [B, 1, L, L]: LOADed once per chunk, not once per head)."""
    block_vbuf: bool = False
    """The ring and a chunk's PAM rows fit VBUF only as the block form holds them
    (passes/spls_block_prediction.py `vbuf_needed`), not in half of VBUF."""
    spa_slots: int = 0
    """Ring form without SIMILARITY: heads whose chunk SPA rows are on chip at once, each
    STOREd once ranked (head h in slot h % spa_slots); 0 = every head (SIMILARITY reads the
    chunk's rows of all heads together)."""
    block_rows: int = 0
    """Block form (ring form whose K^ codes do not stay on chip, or `block_vbuf`): rows
    predicted per block, head by head (passes/spls_block_prediction.py); 0 = chunk form."""

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    @property
    def width_in(self) -> int:
        return self.x.shape[2]

    @property
    def rows(self) -> int:
        return self.batch * self.length

    @property
    def causal(self) -> bool:
        return self.predict.causal is not None

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def k_width(self) -> int:
        """Columns of K^: one head_dim block per K head (grouped-query attention: fewer than
        Q^'s; query head h reads K^ head h // group)."""
        return self.predict.key_heads * self.head_dim

    @property
    def qk_width(self) -> int:
        return self.width + self.k_width

    @property
    def group(self) -> int:
        """Query heads per K^ head."""
        return self.heads // self.predict.key_heads

    @property
    def spa_size(self) -> int:
        return self.heads * self.length * self.length

    @property
    def probs(self) -> bool:
        """Whether SIMILARITY reads cosprob's softmax(PAM) rows (VBUF)."""
        return self.sim is not None and self.sim.pam is not None

    @property
    def float_pam(self) -> bool:
        """Whether the PAM is scaled to FP32 (cosprob's probs, or an additive mask): the score
        path (BPU_SCORES) then ranks it, and the fit keeps room for FP32 rows of the PAM's shape
        in VBUF (`passes/spls_chain_fit.py`; only cosprob's prob rows are written there)."""
        return self.probs or self.predict.mask is not None

    @property
    def chunk_size(self) -> int:
        """Elements of one head-major block of SPA / PAM rows: all rows, or (ring) a chunk's."""
        heads = self.spa_slots or self.heads
        return heads * self.chunks[0][1] * self.length if self.ring else self.spa_size

    @property
    def ring_slots(self) -> int:
        """SIMILARITY's reference rows kept in the ring form (none without SIMILARITY)."""
        if self.sim is None:
            return 0
        return spls_kernels.ring_slots(self.sim.window.value.data, self.length)


def _chain_ops(op: spls.HLogQuantizeOp) -> tuple[spls.PredictAttentionOp, spls.TopKOp,
                                                  spls.LocalSimilarityOp | None, bool]:
    """The prediction, top-k and similarity (None: spls-no-reuse erased it) insert-spls emits
    from `op`, and whether a sparse attention reads SPA; one-line errors for anything else."""
    predict = _single_user(op.codes, spls.PredictAttentionOp, op)
    assert isinstance(predict, spls.PredictAttentionOp)
    if [u.operation for u in op.code_scale.uses] != [predict]:
        raise fail(op, "the HLog scale must feed the prediction only")
    pam_users = [u.operation for u in predict.result.uses]
    topks = [u for u in pam_users if isinstance(u, spls.TopKOp)]
    if len(topks) != 1 or any(not isinstance(u, (spls.TopKOp, spls.LocalSimilarityOp))
                              for u in pam_users):
        raise fail(predict, "PAM must feed one spls.topk (and the similarity's probs)")
    topk = topks[0]
    sims = [u.operation for u in topk.result.uses if isinstance(u.operation, spls.LocalSimilarityOp)]
    if len(sims) > 1:
        raise fail(topk, "SPA must feed at most one spls.local_similarity")
    sim = sims[0] if sims else None
    assert sim is None or isinstance(sim, spls.LocalSimilarityOp)
    if sim is not None and sim.pam is not None and sim.pam is not predict.result:
        raise fail(sim, "the similarity's probs must be the layer's PAM")
    spa_users = [u.operation for u in topk.result.uses if u.operation is not sim]
    if any(not (isinstance(u, transformer.AttentionOp) and u.spa is not None) for u in spa_users):
        raise fail(topk, "SPA may feed only the similarity and sparse attentions")
    if sim is None and not spa_users:
        raise fail(topk, "SPA feeds neither a similarity nor a sparse attention")
    return predict, topk, sim, bool(spa_users)


def _find_chain(lw: Lowering, op: spls.HLogQuantizeOp) -> Chain:
    """The chain insert-spls emits from `op`, checked, with its sizes and form."""
    predict, topk, sim, keep_spa = _chain_ops(op)
    if op.scale is not None:
        raise fail(op, "a static HLog scale is not supported (insert-spls emits dynamic ones)")
    if max(op.bits.value.data, predict.bits.value.data) > MAX_INT8_HLOG_BITS:
        raise fail(op, f"hlog-bits > {MAX_INT8_HLOG_BITS} is not supported (int8 code buffers)")
    x = lw.f32_tensor(op.x, "x")
    length = x.shape[1]
    c = Chain(op, predict, topk, sim, keep_spa, x, predict.num_heads.value.data,
               lw.weight_array(predict.wq, "wq").shape[1], [])
    c.streamed = not projection_fits(lw, c)
    chunk = chunk_rows(lw, length)
    c.ring = not whole_rows_fit(lw, c)
    if c.ring:
        chunk = min(chunk, ring_chunk_rows(lw, c))
    c.chunks = [(r0, min(chunk, length - r0)) for r0 in range(0, length, chunk)]
    if c.ring and sim is None:  # as many heads as MBUF holds: slack for the STOREs
        c.spa_slots = min(c.heads, lw.capacity(Buffer.MBUF) // (chunk * length))
    return c


def lower_prediction(lw: Lowering, op: spls.HLogQuantizeOp) -> None:
    """The whole prediction chain of one layer (see the module docstring)."""
    plan_masked_inputs(lw, op)
    c = _find_chain(lw, op)
    lw.fused.update(o for o in (c.predict, c.topk, c.sim) if o is not None)
    r = c.regions
    if c.block_vbuf:  # lay the chain's VBUF regions out from address 0: after phase 1 the
        lw.rings[Buffer.VBUF].cursor = 0  # ring then finds the rest of VBUF in one piece
    consumers = chunk_consumers(c.sim, op.x) if c.sim is not None else []  # the masked Q
    if c.streamed:
        projection = StreamedProjection.plan(lw, c)
    else:
        hlog_input(lw, c)
        projection = WholeProjection.plan(lw, c, by_groups=bool(consumers))
    kv = independent_projections(c, op.x)
    scored = beside_scores(c, kv)  # lowered beside the score path instead (below)
    # K / V, lowered while every projection region is reserved (no tile shared), are spread
    # over the projection's BPUs by the ordering step (prediction_overlap.interleave).
    independent = lower_early(lw, kv, c.x)
    projection_start = c.projection_start = lw.label()
    projection.emit(lw, c)
    place_independent(lw, independent, projection_start, projection.group, after_chain=False)
    projection.release(lw, c)
    if c.ring and (c.block_vbuf or r.get("kc") is None):
        c.spa_slots = 0  # the block form keeps a chunk's rows of every head
        c.block_rows = block_rows(c)
        block_codes(lw, c, projection)
    keys = key_codes(lw, c, projection)
    masks = _allocate_masks(lw, c)
    spill = BlockSpill.plan(lw, c, masks, projection) if c.block_rows else None
    if c.ring and projection.mask_rows.per_query and spill is None:
        # Held until the Q linear below is lowered: a region freed after each head's mask
        # rows would be taken by Q's input tiles, which then could not move in front of the
        # chain (hoist_preparation), and Q's chunk GEMMs would wait for the last chunk.
        c.mask_slots = mask_slots(lw, c, projection.mask_rows)
    outputs = _output_groups(lw, kv, independent, spill, masks, projection)
    chain_start, first = lw.label(), len(lw.stream)
    for b in range(c.batch):
        if spill is not None:
            for r0 in range(0, c.length, c.block_rows):
                emit_block(lw, c, projection, keys, masks, spill, b, r0,
                           min(c.block_rows, c.length - r0))
            continue
        for r0, n in c.chunks:
            _emit_chunk(lw, c, projection, keys, masks, b, r0, n)
            outputs.emit_ready(lw, r0)  # O of the groups decided a chunk ago
    place_independent(lw, independent, projection_start, projection.group, after_chain=True)
    outputs.finish(lw)
    after_chain = lower_beside_scores(lw, scored, chain_start, lw.stream[first:])
    if independent is not None and not outputs.started:  # K / V pieces expected after the
        lw.place("sink", independent)  # projection: after the chain (O groups: after chunk 0)
    # The masked Q linear, lowered while the chain's regions are still reserved (its tiles
    # avoid them, so no false dependency holds its loads behind the last chunk), after it;
    # its input tile's preparation then moves in front of the chain.
    generation = lw.lower_aside(consumers, masks) if consumers else None
    place_generation(lw, c, kv, consumers, masks, generation, chain_start,
                     follow=projection.group > 0 and independent is not None)
    _release_chain(lw, c, projection, keys, spill)
    # no room beside the projection (or beside the score path): after the chain, as one unit
    for early in (kv if independent is None else []) + after_chain:
        lw.lower_now(early)


def _release_chain(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection,
                   keys: HeadKeys, spill: BlockSpill | None) -> None:
    """Free the chain's regions once every op lowered beside it has its tiles (the masks stay
    for the layer's masked ops)."""
    r = c.regions
    if c.mask_block_reader is not None:  # the attention reads the block the chain LOADed
        hand_over_block(lw, c.mask_block_reader, c.mask_slots[0])
    else:
        lw.free(Buffer.VBUF, *c.mask_slots)
    if spill is not None:
        spill.free(lw)
    if r["pam"] is not None:
        lw.free(Buffer.VBUF, r["pam"])
    projection.mask_rows.free()
    lw.free(Buffer.VBUF, r["pam_scale"], r["sqk"])
    keys.finish(lw)
    projection.finish(lw, c)
    if not c.keep_spa or c.ring:
        lw.free(Buffer.MBUF, r["spa"])
    if r["ring"] is not None:
        lw.free(Buffer.VBUF if c.probs else Buffer.MBUF, r["ring"])


def _allocate_masks(lw: Lowering, c: Chain) -> MaskTiles:
    """Phase 2's MBUF masks (reuse map, row mask, key mask, SPA) and the FP32 PAM when it did
    not fit beside X; the masks are registered for the ops that read them."""
    r = c.regions
    if c.ring:  # the chunk's SPA rows, sized to the MBUF left beside the masks, take their
        r["spa"] = lw.alloc(Buffer.MBUF, c.chunk_size)  # contiguous region before them
    if c.sim is None:  # SPA only: no reuse map, row mask or key mask
        masks = MaskTiles(c.batch, c.length, c.heads, x=c.op.x)
    else:
        masks = MaskTiles(c.batch, c.length, c.heads,
                          reuse_map=lw.alloc(Buffer.MBUF, 2 * c.length * c.batch),
                          row_mask=lw.alloc(Buffer.MBUF, c.length * c.batch),
                          key_mask=lw.alloc(Buffer.MBUF, c.heads * c.length * c.batch),
                          spa=None, chunks=_gemm_row_tiles(lw, c), x=c.op.x)
    if not c.ring:
        r["spa"] = lw.alloc(Buffer.MBUF, c.spa_size * c.batch)
    r["ring"] = None  # type: ignore[assignment]
    if c.ring and c.block_rows:  # the large ring first: the freed staging leaves a gap
        r["ring"] = _allocate_ring(lw, c)
    if c.probs and r["pam"] is None:  # cosprob's prob rows
        r["pam"] = lw.alloc(Buffer.VBUF, c.chunk_size)
    if c.ring and not c.block_rows and c.ring_slots:
        r["ring"] = _allocate_ring(lw, c)
    values = (c.topk.result,) if c.sim is None else (c.sim.reuse_map, c.sim.key_mask,
                                                      c.topk.result)
    masks.users = {u.operation for v in values for u in v.uses if u.operation is not c.sim}
    for value in values:
        lw.masks[value] = masks
    if c.keep_spa and c.ring:
        masks.spa_dram = lw.scratch_tensor((c.batch, c.heads, c.length, c.length), np.uint8)
    elif c.keep_spa:
        masks.spa = r["spa"]
    return masks


def _allocate_ring(lw: Lowering, c: Chain) -> int:
    """The SIMILARITY reference ring: SPA rows in MBUF for overlap, prob rows in VBUF for
    cosprob."""
    return lw.alloc(Buffer.VBUF if c.probs else Buffer.MBUF, c.ring_slots * c.heads * c.length)


def _gemm_row_tiles(lw: Lowering, c: Chain) -> list[tuple[int, int]]:
    """(first row, rows) of the masked Q linear's GEMMs: whole prediction chunks, consecutive
    ones grouped while they fit the MAC array's rows (GEMM g then waits for the SIMILARITY of
    its last chunk). A GEMM of fewer rows leaves array rows idle for all its K x N work: the
    ring form's 8-row chunks at 512 tokens ran Q at a quarter of the array's rate."""
    tiles: list[tuple[int, int]] = []
    for r0, n in c.chunks:
        if tiles and tiles[-1][1] + n <= lw.config.mac_rows:
            tiles[-1] = (tiles[-1][0], tiles[-1][1] + n)
        else:
            tiles.append((r0, n))
    return tiles


def _emit_chunk(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection,
                keys: HeadKeys, masks: MaskTiles, b: int, r0: int, n: int) -> None:
    """Phase 2 for rows [r0, r0 + n) of batch element b (progressive prediction): per head
    BPU -> the score path (`emit_scores`: SPA rows, and cosprob's prob rows), then SIMILARITY
    of the chunk. The reuse map of chunk c only needs the PAM rows of chunk c and the window
    of earlier computed rows, whose SPA / prob rows and map entries stay on chip, so chunk c's
    consumers (the masked Q GEMM's rows of chunk c) run on the compute queue while the BPU
    predicts chunk c + 1. Query head h reads K^ head h // group where `keys` has put it (on
    chip, or LOADed per group of K heads: passes/spls_key_codes.py)."""
    r, length = c.regions, c.length
    mask_rows = projection.mask_rows
    prob = r["pam"] if c.probs else None
    q_codes = projection.q_codes(lw, c, b, r0, n)
    spa_at = r["spa"] if c.ring else r["spa"] + b * c.spa_size
    for i, (h, k_at, k_stride) in enumerate(keys.heads(lw, c, b, r0)):
        # The chunk's rows of head h: in the [H, L, L] block, or (ring) the [H, n, L] chunk.
        block = (h % (c.spa_slots or c.heads)) * n * length if c.ring \
            else h * length * length + r0 * length
        if mask_rows.per_query and c.ring:  # the slots held for the chain
            mask = {"add_mask_addr": chunk_mask_rows(lw, c, mask_rows, b, h, r0, n,
                                                      first=i == 0), "add_mask_rows": 1}
        elif mask_rows.per_query:
            mask = {"add_mask_addr": mask_rows.block(b, h) + r0 * length, "add_mask_rows": 1}
        else:
            mask = {"add_mask_addr": mask_rows.row(b, h)} if mask_rows.present else {}
        emit_scores(lw, c, b, r0, n, (q_codes + h * c.head_dim, k_at, k_stride), spa_at + block,
                    None if prob is None else prob + block, mask)
        if c.spa_slots:  # no SIMILARITY reads them: out as soon as ranked
            _store_spa_rows(lw, c, masks, b, h, r0, n, spa_at + block)
    emit_similarity(lw, c, masks, b, r0, n, spa_at, prob)
    if c.ring and c.keep_spa and not c.spa_slots:
        for h in range(c.heads):
            _store_spa_rows(lw, c, masks, b, h, r0, n, spa_at + h * n * length)


def _store_spa_rows(lw: Lowering, c: Chain, masks: MaskTiles, b: int, h: int, r0: int, n: int,
                    at: int) -> None:
    """STORE head h's SPA rows [r0, r0 + n) of batch element b from MBUF `at` to the DRAM
    scratch the sparse attention LOADs them back from (ring form: MaskTiles.spa_dram)."""
    assert masks.spa_dram is not None
    lw.store_(Buffer.MBUF, at, masks.spa_dram.address + ((b * c.heads + h) * c.length + r0)
              * c.length, n, c.length)


def emit_scores(lw: Lowering, c: Chain, b: int, r0: int, n: int, codes: tuple[int, int, int],
                spa: int, prob: int | None, mask: dict[str, int]) -> None:
    """SPA rows at `spa` (MBUF) of one head's n x L PAM, BPU_SCORES from the head's codes
    `codes` = (Q^ rows, K^ rows, K^ row stride; ABUF): the products go from the BPU's lanes
    into the score path (runtime/isa_prediction_scores.py), never through ACC. Without an
    additive `mask` (BPU_SCORES' add_mask fields) or cosprob's `prob` rows (VBUF) to write, the
    exact integer products rank as they are (`integer_rank`: the scales are positive); else
    they are scaled by the PAM scale and (s_Q, s_K) of batch element b, plus the mask, ranked,
    and normalized into `prob`. A masked key ranks by PAM plus the mask, as the reference
    does (docs/design.md section 3, "Masks")."""
    q_at, k_at, k_stride = codes
    causal = {"causal": int(c.causal), "causal_offset": r0 if c.causal else 0}
    bpu = {"a_addr": q_at, "b_addr": k_at, "rows": n, "cols": c.length, "depth": c.head_dim,
           "a_stride": c.width, "b_stride": k_stride, "k": c.topk.k.value.data}
    if prob is None and not mask:
        scores = lw.emit("bpu_scores", PREDICT, spa_addr=spa, integer_rank=1, **bpu, **causal)
    else:
        scores = lw.emit("bpu_scores", PREDICT, spa_addr=spa, **bpu,
                         scale_addr=c.regions["pam_scale"], scalar_count=2,
                         scalar_addr=c.regions["sqk"] + 2 * b, has_add_mask=int(bool(mask)),
                         **mask, has_prob=int(prob is not None), prob_addr=prob or 0, **causal)
    scores.attributes[CYCLES_ATTR] = score_cycles(lw, c, n)  # an anchor of `interleave`


def emit_similarity(lw: Lowering, c: Chain, masks: MaskTiles, b: int, r0: int, n: int,
                    spa_at: int, prob_at: int | None) -> None:
    """SIMILARITY of rows [r0, r0 + n) of batch element b: SPA rows at `spa_at`, softmax(PAM)
    (or the FP32 PAM) rows at `prob_at`; the ring form reads its references from the ring."""
    sim, length, heads = c.sim, c.length, c.heads
    if sim is None:  # no row can be reused: nothing to decide
        return
    ring = {"has_ring": 1, "ring_addr": c.regions["ring"]} if c.ring else {}
    lw.emit("similarity", PREDICT, map_addr=masks.reuse_map + 2 * length * b,
            key_mask_addr=masks.key_mask + heads * length * b, spa_addr=spa_at,
            has_prob=int(prob_at is not None), prob_addr=prob_at or 0, heads=heads,
            length=length, keys=length, window=sim.window.value.data, k=sim.k.value.data,
            threshold=float(sim.threshold.value.data), mode=SIMILARITY_MODES[sim.mode.data],
            has_row_mask=1, row_mask_addr=masks.row_mask + length * b,
            first_reference=(0 if sim.first_reference is None
                             else sim.first_reference.value.data),
            first_row=r0, row_count=n, **ring)


def _output_groups(lw: Lowering, early: list[Operation], beside: int | None,
                   spill: BlockSpill | None, masks: MaskTiles,
                   projection: WholeProjection | StreamedProjection
                   ) -> OutputGroups | NoOutputGroups:
    """The layer's O per prediction row group (passes/spls_output_groups.py) when its
    attention is among the ops lowered `beside` the projection (`early`:
    `dense-prefix=attention`) and the chain runs chunk by chunk (no block `spill`)."""
    if beside is None or spill is not None or not early or \
            not isinstance(early[-1], transformer.AttentionOp):
        return NoOutputGroups()
    users = [u.operation for u in early[-1].result.uses]
    return OutputGroups.plan(lw, masks, users[0] if len(users) == 1 else None,
                             projection.acc_buf, beside) or NoOutputGroups()


def lower_stray(lw: Lowering, op: Operation) -> None:
    raise fail(op, "spls prediction ops are lowered as the chain insert-spls emits "
                "(hlog_quantize -> predict_attention -> topk -> local_similarity)")


PREDICTION_RULES: dict[type[Operation], Rule] = {
    spls.HLogQuantizeOp: lower_prediction,  # type: ignore[dict-item]
    spls.PredictAttentionOp: lower_stray,
    spls.TopKOp: lower_stray,
    spls.LocalSimilarityOp: lower_stray,
}
"""The prediction rules: spls op class -> the function emitting its instructions."""
