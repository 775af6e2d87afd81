"""mlir-opt's IR printing options, shared by esact-cc and esact-opt.

    --mlir-print-ir-after-all        the IR after every pass
    --mlir-print-ir-before=PASS      the IR before each run of PASS (repeatable)
    --mlir-print-ir-after=PASS       the IR after each run of PASS (repeatable)
    --mlir-print-ir-tree-dir=DIR     write those dumps to files under DIR instead of stderr

A dump on stderr starts with mlir-opt's header, `// -----// IR Dump After Name (pass) //----- //`
and holds the IR without weights (a diagnostic, not an IR file). Under `--mlir-print-ir-tree-dir`
each dump is an IR file, `DIR/builtin_module_no-symbol-name/<n>_<pass>.mlir` as mlir-opt names
them (n counts the passes run, from 0; `.before.mlir` for a before-dump), with its weights
beside it (the unchanged store's `.npz` is written once and shared). The former spellings
(`--print-ir-after-all` of esact-cc, `--print-between-passes` of esact-opt) are aliases of
`--mlir-print-ir-after-all`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from esact_cc.runtime.errors import CommandLineError

if TYPE_CHECKING:  # xdsl is not needed to build the parser (esact-cc --help)
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

    from esact_cc.weight_store import WeightStore

TREE_SUBDIR = "builtin_module_no-symbol-name"
"""mlir-opt's directory for the top-level module (op name, then symbol name)."""


def add_ir_printing_arguments(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """The options above; `aliases` are former spellings of `--mlir-print-ir-after-all`."""
    parser.add_argument("--mlir-print-ir-after-all", *aliases, dest="print_ir_after_all",
                        action="store_true", help="print the IR after every pass to stderr"
                        + (f" ({', '.join(aliases)}: former spelling)" if aliases else ""))
    parser.add_argument("--mlir-print-ir-before", dest="print_ir_before", action="append",
                        default=[], metavar="PASS", help="print the IR before PASS (repeatable)")
    parser.add_argument("--mlir-print-ir-after", dest="print_ir_after", action="append",
                        default=[], metavar="PASS", help="print the IR after PASS (repeatable)")
    parser.add_argument("--mlir-print-ir-tree-dir", dest="print_ir_tree_dir", metavar="DIR",
                        help="write the printed IR to files under DIR instead of stderr")


class IRDumper:
    """Prints (or writes) the IR around passes as the parsed options ask."""

    def __init__(self, args: argparse.Namespace, pass_names: Collection[str]):
        from esact_cc.typed_options import unknown_name

        for option, names in (("--mlir-print-ir-before", args.print_ir_before),
                              ("--mlir-print-ir-after", args.print_ir_after)):
            for name in names:
                if name not in pass_names:
                    raise CommandLineError(f"{option}: {unknown_name('pass', name, pass_names)}")
        self.after_all: bool = args.print_ir_after_all
        self.before_names = set(args.print_ir_before)
        self.after_names = set(args.print_ir_after)
        self.tree_dir = Path(args.print_ir_tree_dir) if args.print_ir_tree_dir else None
        if self.tree_dir is not None and not self.enabled():
            raise CommandLineError("--mlir-print-ir-tree-dir: give what to print too "
                                   "(--mlir-print-ir-after-all, --mlir-print-ir-before/after=PASS)")
        self.count = 0

    def enabled(self) -> bool:
        return bool(self.after_all or self.before_names or self.after_names)

    def before(self, module_pass: ModulePass, module: ModuleOp, store: WeightStore) -> None:
        if module_pass.name in self.before_names:
            self._dump("Before", module_pass, module, store)

    def after(self, module_pass: ModulePass, module: ModuleOp, store: WeightStore) -> None:
        if self.after_all or module_pass.name in self.after_names:
            self._dump("After", module_pass, module, store)
        self.count += 1

    def _dump(self, when: str, module_pass: ModulePass, module: ModuleOp,
              store: WeightStore) -> None:
        from esact_cc import api

        if self.tree_dir is not None:
            suffix = ".before.mlir" if when == "Before" else ".mlir"
            path = self.tree_dir / TREE_SUBDIR / f"{self.count}_{module_pass.name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            api.write_ir(module, store, path)
            return
        header = f"// -----// IR Dump {when} {type(module_pass).__name__} ({module_pass.name}) //----- //"
        sys.stderr.write(f"{header}\n{api.ir_text(module)}\n")
        sys.stderr.flush()
