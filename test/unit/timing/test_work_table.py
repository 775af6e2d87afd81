"""WorkTable.from_records: isa.Work records and mappings give the same int64 columns, buffers
named by string in any case or by isa.Buffer, missing records and fields are zeros."""

from __future__ import annotations

from esact_cc.runtime.isa import Buffer, Work
from esact_cc.runtime.work_table import BUFFERS, SCALAR_FIELDS, WorkTable

RECORDS = [
    Work(macs_dense=100, macs_executed=60, rows_total=8, rows_executed=5, cols_executed=3,
         sram_read_bytes={"ABUF": 7, Buffer.WBUF: 9}, sram_write_bytes={"acc": 4}),
    Work(),
    Work(dram_read_bytes=64, dram_write_bytes=2, sram_write_bytes={Buffer.VBUF: 11, "ABUF": 1}),
]


def columns(table: WorkTable) -> dict[str, list[int]]:
    return {name: column.tolist() for name, column in table.columns.items()}


def test_work_records_become_columns() -> None:
    table = WorkTable.from_records(RECORDS)
    assert table.n == 3
    assert table["macs_executed"].tolist() == [60, 0, 0]
    assert table["cols_executed"].tolist() == [3, 0, 0]
    assert table["dram_read_bytes"].tolist() == [0, 0, 64]
    assert table["sram_read_abuf"].tolist() == [7, 0, 0]
    assert table["sram_read_wbuf"].tolist() == [9, 0, 0]
    assert table["sram_write_acc"].tolist() == [4, 0, 0]
    assert table["sram_write_vbuf"].tolist() == [0, 0, 11]
    assert table["sram_write_abuf"].tolist() == [0, 0, 1]
    assert table.total("sram_read_wbuf") == 9
    assert set(table.columns) == set(SCALAR_FIELDS) | {
        f"sram_{d}_{b}" for b in BUFFERS for d in ("read", "write")}
    assert all(column.dtype.name == "int64" for column in table.columns.values())


def test_mappings_and_missing_records_match_work_records() -> None:
    as_maps = [{name: getattr(r, name) for name in
                (*SCALAR_FIELDS, "sram_read_bytes", "sram_write_bytes")} for r in RECORDS]
    as_maps[1] = None
    assert columns(WorkTable.from_records(as_maps)) == columns(WorkTable.from_records(RECORDS))
    assert columns(WorkTable.from_records([None, {}])) == columns(WorkTable.zeros(2))


def test_an_empty_program_has_empty_columns() -> None:
    assert columns(WorkTable.from_records([])) == columns(WorkTable.zeros(0))
