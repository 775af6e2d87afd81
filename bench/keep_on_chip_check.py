"""Keep-on-chip against the DRAM round trip on every golden-digest case (test/e2e/
test_golden_binaries.py): each is compiled with and without `keep_on_chip`, both binaries run
on the fixture's inputs (the digits ViT: 4 test images, one at a time), and every output must
be bit-identical; prints cycles, on-chip energy and DRAM bytes of both.

    python bench/keep_on_chip_check.py [-o bench/results/keep_on_chip_check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

from test_golden_binaries import DIGITS_CALIBRATION, cases, compile_case


def inputs_of(name: str, options: dict) -> list[dict[str, np.ndarray]]:
    model = Path(options["model"])
    if options.get("calibration_data") == DIGITS_CALIBRATION:
        images = np.load(ROOT / "esact_cc" / "models" / "digits_test.npz")["images"]
        return [{"pixel_values": images[i:i + 1]} for i in range(4)]
    with np.load(model.with_suffix(".inputs.npz")) as data:
        return [{k: data[k] for k in data.files}]


def measure(options: dict, keep: bool, feeds: list, tmp: Path) -> tuple[dict, list]:
    compiled = compile_case(tmp, {**options, "keep_on_chip": keep})
    totals = {"cycles": 0, "on_chip_uj": 0.0, "dram_bytes": 0}
    outputs = []
    for feed in feeds:
        run = compiled.simulate(feed)
        out, report = run.outputs, run.report
        outputs.append(out)
        totals["cycles"] += report["total"]["cycles"]
        totals["dram_bytes"] += report["total"]["dram_bytes"]
        totals["on_chip_uj"] += report["energy"]["on_chip"]["energy_pj"] * 1e-6
    return totals, outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in sorted(cases().items()):
            feeds = inputs_of(name, options)
            before, out_before = measure(options, False, feeds, Path(tmp))
            after, out_after = measure(options, True, feeds, Path(tmp))
            same = all(o1.keys() == o2.keys() and all(
                o1[k].dtype == o2[k].dtype and np.array_equal(o1[k], o2[k], equal_nan=True)
                for k in o1) for o1, o2 in zip(out_before, out_after))
            result[name] = {"through_dram": before, "keep_on_chip": after, "identical": same,
                            "cycles_ratio": after["cycles"] / before["cycles"]}
            print(f"{name}: identical={same} cycles {before['cycles']} -> {after['cycles']} "
                  f"on-chip {before['on_chip_uj']:.2f} -> {after['on_chip_uj']:.2f} uJ "
                  f"DRAM {before['dram_bytes']} -> {after['dram_bytes']} B", flush=True)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if all(r["identical"] for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
