"""The sweep spec: a TOML file validated by pydantic; every error names the file and the key.

    [sweep]
    inputs = [0, 1]                # test-split samples each point is timed on
    accuracy_samples = 360         # test-split samples the accuracy is measured on (all)

    [[models]]
    name = "digits-vit"            # the bundled model, or give onnx/test_data/calibration_data

    [[sparsity]]
    scheme = "dense"
    [[sparsity]]
    scheme = "spls"
    options = { threshold = [0.9, 0.95] }   # a list sweeps the option

    [hardware]
    base = "default"               # a --hw name or TOML file (relative to the spec)
    [hardware.axes]
    "mac_array.rows" = [16, 32]    # any hardware parameter by its TOML key
    "dram.technology" = ["ddr3", "hbm2"]
"""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esact_cc.runtime.bounded_read import CONFIG_FILE_CAP, read_bounded_text
from esact_cc.runtime.errors import ConfigError, EsactError

BUNDLED_MODEL = "digits-vit"
MAX_POINTS = 1_000_000  # a product of axes grows fast: refused before it is expanded
Scalar = Union[bool, int, float, str]
NonEmptyList = Annotated[list[Scalar], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SweepSection(_Strict):
    inputs: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0]
    accuracy_samples: Annotated[int, Field(ge=1)] | None = None


class ModelSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    onnx: str | None = None
    test_data: str | None = None  # .npz: one array per model input (samples on axis 0)
    labels_key: str = "labels"    # ... and the labels
    calibration_data: str | None = None

    @field_validator("test_data")
    @classmethod
    def _npz(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".npz"):
            raise ValueError("must be an .npz file")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.name != BUNDLED_MODEL and (self.onnx is None or self.test_data is None):
            raise ValueError(f"a model other than '{BUNDLED_MODEL}' needs 'onnx' and "
                             "'test_data'")


class SparsitySpec(_Strict):
    scheme: str = "dense"
    options: dict[str, Union[Scalar, NonEmptyList]] = {}


class HardwareSpec(_Strict):
    base: str | None = None
    axes: dict[str, NonEmptyList] = {}


class SweepSpec(_Strict):
    sweep: SweepSection = SweepSection()
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    sparsity: Annotated[list[SparsitySpec], Field(min_length=1)] = [SparsitySpec()]
    hardware: HardwareSpec = HardwareSpec()


def sparsity_settings(sparsity: SparsitySpec) -> list[dict[str, Any]]:
    """One setting per combination of the listed option values."""
    names = sorted(sparsity.options)
    choices = [v if isinstance(v, list) else [v] for v in (sparsity.options[n] for n in names)]
    return [{"scheme": sparsity.scheme, "values": dict(zip(names, combo)),
             "options": [f"{n}={_option_text(v)}" for n, v in zip(names, combo)]}
            for combo in itertools.product(*choices)]


def _option_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_spec(table: dict[str, Any], source: str) -> SweepSpec:
    """The spec a parsed TOML table describes; a ConfigError `source: key: problem`."""
    try:
        spec = SweepSpec.model_validate(table)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {where}: {message}") from None
    points = len(spec.models) * len(spec.sweep.inputs) * math.prod(
        len(values) for values in spec.hardware.axes.values()) * sum(
        math.prod(len(v) if isinstance(v, list) else 1 for v in s.options.values())
        for s in spec.sparsity)
    if points > MAX_POINTS:
        raise ConfigError(f"{source}: the spec has {points:,} points, more than the "
                          f"{MAX_POINTS:,} one sweep may have; split it")
    check_values(spec, source)
    return spec


def check_values(spec: SweepSpec, source: str) -> None:
    """Names pydantic cannot check: sparsity schemes and options, hardware keys and values
    (each axis value must make a valid config on its own), repeated model names."""
    from esact_cc.sparsity.selection import select_scheme

    from .points import base_table, hardware_config

    names = [m.name for m in spec.models]
    for k, name in enumerate(names):
        if names.index(name) != k:
            raise ConfigError(f"{source}: models.{k}.name: '{name}' is given twice")
    for k, sparsity in enumerate(spec.sparsity):
        for setting in sparsity_settings(sparsity):
            try:
                select_scheme({"sparsity": setting["scheme"],
                               "sparsity_option": setting["options"]})
            except EsactError as exc:
                message = str(exc).removeprefix("--sparsity-option: ").removeprefix("--sparsity: ")
                raise ConfigError(f"{source}: sparsity.{k}: {message}") from None
    base = base_table(spec.hardware.base, Path(source).parent, source)
    for key, values in spec.hardware.axes.items():
        for value in values:
            hardware_config(base, {key: value}, f"{source}: hardware.axes")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file (at most CONFIG_FILE_CAP bytes of UTF-8 TOML)."""
    path = Path(path)
    text = read_bounded_text(path, CONFIG_FILE_CAP, "sweep spec")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests arrays or tables too deeply") from None
    return parse_spec(table, str(path))
