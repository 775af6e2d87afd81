"""The weight store: the compiler's tensors by name, kept out of the IR.

IR ops hold handles (`onnx.weight "name"`); the values live here, as numpy arrays. A store is
saved as a deterministic `.npz` (sorted members, fixed zip timestamps, no compression), so the
same model always produces the same bytes.

Convention for IR files: a module whose weights live on disk carries the module attribute
`esact.weight_store = "<path of the .npz, relative to the IR file's directory>"`. Writers put
the `.npz` next to the IR file (`write_ir`); readers (`esact-opt`, `esact-cc --run`, the Python
API's `load_ir`) resolve it against the IR file's directory (`load_store_named_by`). A module in
memory travels with its store as an explicit value: passes take it as a constructor field
(passes/weight_store_pass.py), the interpreter, the emitter and the exporter as an argument.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr

from esact_cc.runtime.atomic_write import atomic_write, writes_through
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store_archive import check_weight_store_archive

WEIGHT_STORE_ATTR = "esact.weight_store"
"""Module attribute naming the `.npz` holding the module's weights (relative to the IR file)."""

_NPY_SUFFIX = ".npy"
# Fixed member timestamp: zip's earliest representable date, so saves are byte-reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class WeightStore(Mapping[str, np.ndarray]):
    """Tensors by name. Arrays are read-only views: nobody mutates a weight in place."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None):
        self._arrays: dict[str, np.ndarray] = {}
        self._lazy: np.lib.npyio.NpzFile | None = None
        self._lazy_names: set[str] = set()
        self.source_path: Path | None = None
        """The `.npz` this store was loaded from, while it still matches it (else None)."""
        for name, array in (arrays or {}).items():
            self.add(name, array)

    # --- mapping -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._arrays:
            return self._arrays[name]
        if name in self._lazy_names:
            assert self._lazy is not None
            try:
                array = self._lazy[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                # e.g. a bad CRC: members are only read (and checked) on first use
                raise CompileError(f"weight store '{self.source_path}': cannot read weight "
                                   f"'{name}': {_one_line(e)}") from None
            array.flags.writeable = False
            self._arrays[name] = array
            self._lazy_names.discard(name)
            return array
        raise CompileError(f"weight '{name}' is not in the weight store")

    def __contains__(self, name: object) -> bool:
        return name in self._arrays or name in self._lazy_names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._arrays) | self._lazy_names))

    def __len__(self) -> int:
        return len(self._arrays) + len(self._lazy_names)

    # --- building ------------------------------------------------------------------------
    def add(self, name: str, array: np.ndarray) -> str:
        """Store `array` under `name` (which must be new) without copying it; returns `name`."""
        if name in self:
            raise CompileError(f"weight '{name}' is already in the weight store")
        array = np.asarray(array)
        if array.flags.writeable:
            # A view, so the caller's array stays writable while ours cannot change.
            array = array.view()
            array.flags.writeable = False
        self._arrays[name] = array
        self.source_path = None
        return name

    def keep_only(self, names: Collection[str]) -> None:
        """Drop every weight not in `names`; a kept view gets its own copy, so the buffer it
        viewed (an imported model's whole file) is freed with the dropped weights."""
        for name in list(self._arrays):
            array = self._arrays[name]
            if name not in names:
                del self._arrays[name]
            elif array.base is not None:
                own = np.array(array)
                own.flags.writeable = False
                self._arrays[name] = own
        self._lazy_names &= set(names)
        self.source_path = None

    def unique_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... whichever is not taken yet."""
        if base not in self:
            return base
        index = 1
        while f"{base}_{index}" in self:
            index += 1
        return f"{base}_{index}"

    def nbytes(self) -> int:
        return sum(self[name].nbytes for name in self)

    # --- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write all tensors to `path` (.npz) atomically and deterministically."""
        path = Path(path)

        def write_zip(raw: IO[bytes]) -> None:
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
                for name in self:
                    info = zipfile.ZipInfo(name + _NPY_SUFFIX, date_time=_ZIP_EPOCH)
                    info.external_attr = 0o644 << 16
                    with zf.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, self[name], allow_pickle=False)

        atomic_write(path, write_zip)
        self.source_path = path.resolve()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightStore:
        """Open a `.npz` store; tensors are read on first use. The archive's members and sizes
        are checked first (weight_store_archive.py): it may come from anywhere."""
        path = Path(path)
        check_weight_store_archive(path)
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise CompileError(f"cannot read weight store '{path}': {_one_line(e)}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CompileError(f"weight store '{path}' is not an .npz archive")
        store = cls()
        store._lazy = npz
        store._lazy_names = set(npz.files)
        store.source_path = path.resolve()
        return store


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- the store an IR file names ------------------------------------------------------------
def load_store_named_by(module: ModuleOp, ir_dir: str | os.PathLike[str] | None) -> WeightStore:
    """The store a parsed IR file's `esact.weight_store` attribute names (inside `ir_dir`, the
    IR file's directory; None: the current directory); a new empty store without the attribute."""
    attr = module.attributes.get(WEIGHT_STORE_ATTR)
    if attr is None:
        return WeightStore()
    if not isinstance(attr, StringAttr):
        raise CompileError(f"module attribute {WEIGHT_STORE_ATTR} must be a string (a path)")
    return WeightStore.load(resolve_weight_store(attr.data, ir_dir))


def resolve_weight_store(reference: str, ir_dir: str | os.PathLike[str] | None) -> Path:
    """The file an IR file's `esact.weight_store` names, confined to the IR file's directory:
    a relative path without `..`, that symlinks do not lead out of. IR files are input, and a
    reference to any other file would let an IR file copy it into the compiler's outputs."""
    base = Path(ir_dir or ".").resolve()
    where = f"{WEIGHT_STORE_ATTR} = \"{reference}\" (IR directory '{base}')"
    relative = PurePosixPath(reference)
    if "\0" in reference or "\\" in reference or not reference.strip():
        raise CompileError(f"{where}: not a usable file name")
    if relative.is_absolute() or ".." in relative.parts:
        raise CompileError(f"{where}: must be a relative path inside the IR file's directory "
                           "(no absolute path, no '..')")
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise CompileError(f"{where}: a symlink leads outside the IR file's directory")
    return path


def weight_store_path_for(ir_path: str | os.PathLike[str]) -> Path:
    """Where the `.npz` of an IR file goes: beside it, same stem."""
    return Path(ir_path).with_suffix(".npz")


def bind_to_ir_file(module: ModuleOp, store: WeightStore, ir_path: str | os.PathLike[str]) -> None:
    """Make `module` point at a saved copy of `store` for an IR file at `ir_path`.

    Reuses the store's own `.npz` when it is unchanged since loading/saving and lies in the IR
    file's directory (so IR files and weights move together), else saves the store beside the
    IR file. Sets the `esact.weight_store` attribute (relative path); removes it for an empty
    store.
    """
    save = plan_binding(module, store, ir_path)
    if save is not None:
        save()


def plan_binding(module: ModuleOp, store: WeightStore,
                 ir_path: str | os.PathLike[str]) -> Callable[[], None] | None:
    """`bind_to_ir_file` in two steps: sets the attribute now and returns the save still to
    do (None if the store's own `.npz` is reused), for a caller that writes only once
    everything succeeded."""
    ir_file = Path(os.path.realpath(ir_path))  # a symlinked output is written at its target
    ir_dir = ir_file.parent
    if len(store) == 0:
        module.attributes.pop(WEIGHT_STORE_ATTR, None)
        return None
    if writes_through(ir_file):
        raise CompileError(f"output '{ir_path}' is not a regular file: its weights cannot go "
                           "beside it (write the IR to a file)")
    target = weight_store_path_for(ir_file)
    if target == ir_file:
        raise CompileError(f"output '{ir_path}' is where its weight store would go: give the IR "
                           "file another suffix than .npz")
    source = store.source_path
    reuse = source is not None and source.exists() and source.parent == ir_dir
    relative = os.path.relpath(source if reuse else target, ir_dir)  # type: ignore[arg-type]
    module.attributes[WEIGHT_STORE_ATTR] = StringAttr(Path(relative).as_posix())
    return None if reuse else lambda: store.save(target)
