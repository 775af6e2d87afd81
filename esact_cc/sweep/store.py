"""Finished points on disk (what makes a sweep resumable) and the tidy result table.

`results.jsonl` in the output directory gets one JSON line per finished point, appended and
flushed to disk as each group finishes; a restarted sweep reads it and runs only the points
whose ids are not there (a line cut short by a kill is dropped). The table has one row per
point of the spec, in spec order, every parameter and then every figure a column: CSV always (no extra
package), Parquet with pyarrow (the `sweep` extra).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from esact_cc.runtime.atomic_write import atomic_write, atomic_write_text
from esact_cc.runtime.errors import UsageError

RESULTS_FILE = "results.jsonl"
TABLE_FORMATS = ("csv", "parquet")


class ResultStore:
    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / RESULTS_FILE
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.path, "rb") as handle:
            data = handle.read()
        good = 0
        for line in data.splitlines(keepends=True):
            try:
                row = json.loads(line)
            except ValueError:
                break  # the tail a kill cut short; everything after it is rewritten
            if not line.endswith(b"\n") or not isinstance(row, dict) or "point_id" not in row:
                break
            self.rows[row["point_id"]] = row
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for row in map(json.loads, text.splitlines()):
            self.rows[row["point_id"]] = row


def check_formats(formats: Sequence[str]) -> None:
    """Refuse an unknown format, and Parquet without pyarrow, before any work."""
    for name in formats:
        if name not in TABLE_FORMATS:
            raise UsageError(f"--table: unknown format '{name}' (valid: "
                             f"{', '.join(TABLE_FORMATS)})")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("--table parquet needs pyarrow, which is not installed "
                             "(pip install 'esact-cc[sweep]'); --table csv needs nothing") \
                from None


def write_tables(rows: Sequence[dict[str, Any]], parameters: Sequence[str], out_dir: Path,
                 formats: Sequence[str]) -> list[Path]:
    """results.csv / results.parquet: the `parameters` columns, then the figures in the
    order rows first give them (a point without a value, e.g. a dense point's SPLS
    threshold, has an empty cell / null)."""
    columns = list(dict.fromkeys([*parameters, *(key for row in rows for key in row)]))
    written = []
    if "csv" in formats:
        stream = io.StringIO()
        writer = csv.DictWriter(stream, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out_dir / "results.csv", stream.getvalue())
        written.append(out_dir / "results.csv")
    if "parquet" in formats:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        atomic_write(out_dir / "results.parquet", lambda handle: pq.write_table(table, handle))
        written.append(out_dir / "results.parquet")
    return written
