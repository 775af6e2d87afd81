"""The SPA / prob rows a whole-row SIMILARITY of one row chunk reads (docs/hardware.md "SPLS
prediction unit: what SIMILARITY reads").

Its operands span all L rows of every head (`isa_table.similarity_spa_rows`), which is what
`schedule` orders it by: any row may be a reference. The unit reads fewer: the rows it decides
(the chunk's rows at or after first_reference) and, from before the chunk, its references:
the last `window` computed rows at or after first_reference, found from the reuse map (MBUF).
Rows after the chunk are not read (they are not yet ranked). So the work record's SPA (MBUF)
and prob (VBUF) bytes are those rows' only, as the ring form charges its chunk's rows and the
ring slots. A cosprob SIMILARITY is charged the references' SPA rows too (they need only prob
rows): a conservative charge. The functional model charges its SPA and prob views for
`read_rows` rows per head (Machine.view's touched columns).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .isa_table import similarity_rows


def read_rows(f: Mapping[str, int], earlier: np.ndarray) -> int:
    """SPA / prob rows per head a whole-row SIMILARITY reads: those it decides plus its
    references before the chunk (`earlier`: the reuse map of rows 0 .. first_row - 1)."""
    first, reference = f["first_row"], f["first_reference"]
    decided = max(0, first + similarity_rows(f) - max(first, reference))
    computed_before = int((np.asarray(earlier)[reference:] == -1).sum())
    return decided + min(f["window"], computed_before)

