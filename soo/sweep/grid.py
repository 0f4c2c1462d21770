"""A sweep spec: a base finetuning config crossed with lists of flag values, plus control cells.

    base_config: configs/smollm2-135m-instruct.yaml    # finetuning.py --config for every cell
    output_dir: outputs/sweeps/smollm2-layers           # one folder per cell under it
    grid:                                               # every combination, keys in this order
      soo_layers: [5, 10, 15, 20, 25]                   # a scalar for a list field is a one-item list
      seed: [0, 1, 2]
    controls:                                           # extra cells beside the grid
      - name: lm_only
        set: {soo_weight: 0}                            # finetuning flags of the control
        over: [seed]                                    # grid keys it is crossed with (default: [seed])
    train:                                              # optional: finetuning flags for every cell,
      deepspeed: ds_config_stage3_offload.json          #   on top of base_config, not in cell names
    evaluate:                                           # evaluate.py flags for every cell
      protocol: forced_choice
      n: 50

Every key of `grid`, `set` and `train` must be a finetuning.py field; `output_dir` and `config` belong to
the sweep. Relative paths are relative to the folder the command runs in. Cell names are made
from the settings (`soo_layers-10__seed-0`, `lm_only__seed-0`), so a rerun of the same spec finds
the same folders: that is what makes a sweep resumable.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

SPEC_KEYS = {"base_config", "output_dir", "grid", "controls", "train", "evaluate"}
CONTROL_KEYS = {"name", "set", "over"}
RESERVED_FIELDS = {"output_dir", "config"}  # each cell's own folder; the spec's base_config
GRID_CELL_KIND = "grid"


class SweepSpecError(ValueError):
    """A bad sweep spec: one line for the user (exit status 2)."""


@dataclass(frozen=True)
class SweepCell:
    """One train -> evaluate run: its name (also its folder) and its finetuning flags."""

    name: str
    kind: str  # "grid" or the control's name
    settings: dict = field(hash=False)  # finetuning field -> value, in spec order


@dataclass
class SweepSpec:
    path: Path
    base_config: Path
    output_dir: Path
    grid: dict[str, list]
    controls: list[dict]
    evaluate: dict
    train: dict = field(default_factory=dict)  # finetuning flags every cell gets, before its own settings

    def cells(self) -> list[SweepCell]:
        """The grid's cells in spec order (last key fastest), then each control's."""
        cells = []
        keys = list(self.grid)
        for values in itertools.product(*(self.grid[key] for key in keys)):
            settings = dict(zip(keys, values))
            cells.append(SweepCell(cell_name(None, settings), GRID_CELL_KIND, settings))
        for control in self.controls:
            over = control["over"]
            for values in itertools.product(*(self.grid[key] for key in over)):
                crossed = dict(zip(over, values))
                settings = {**control["set"], **crossed}
                cells.append(SweepCell(cell_name(control["name"], crossed), control["name"], settings))
        return cells

    def cell_dir(self, cell: SweepCell) -> Path:
        return self.output_dir / cell.name


def format_value(value) -> str:
    """A value as it appears in a cell name: lists joined by '+', booleans lower-case."""
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def cell_name(prefix: str | None, settings: dict) -> str:
    parts = ([prefix] if prefix else []) + [f"{key}-{format_value(value)}" for key, value in settings.items()]
    return "__".join(parts) or (prefix or "base")


def finetuning_flags(settings: dict) -> list[str]:
    """`--field value ...` for finetuning.py; a list value becomes one flag followed by its items."""
    flags = []
    for key, value in settings.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        flags += [f"--{key}", *(str(item).lower() if isinstance(item, bool) else str(item) for item in items)]
    return flags


def _as_list_field(value, list_fields: set[str], key: str):
    return [value] if key in list_fields and not isinstance(value, list) else value


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; every problem is one SweepSpecError line."""
    from soo.core.io import read_yaml
    from soo.train.config import finetuning_field_names, list_field_names

    path = Path(path)
    raw = read_yaml(path, SweepSpecError, f"{path} (sweep spec)")
    if not isinstance(raw, dict):
        raise SweepSpecError(f"{path}: expected a mapping with keys {', '.join(sorted(SPEC_KEYS))}.")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise SweepSpecError(
            f"{path}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(SPEC_KEYS))}."
        )
    for key in ("base_config", "output_dir", "grid"):
        if not raw.get(key):
            raise SweepSpecError(f"{path}: '{key}' is missing.")
    # Absolute from here on: the cells' children run from the repository root.
    base_config = Path(raw["base_config"]).absolute()
    if not base_config.is_file():
        raise SweepSpecError(f"{path}: base_config {raw['base_config']} is not a file.")

    fields, list_fields = finetuning_field_names(), list_field_names()

    def check_fields(where: str, names) -> None:
        bad = sorted(set(names) & RESERVED_FIELDS)
        if bad:
            raise SweepSpecError(f"{path}: {where} sets {', '.join(bad)}, which the sweep sets for each cell.")
        bad = sorted(set(names) - fields)
        if bad:
            raise SweepSpecError(f"{path}: {where}: {', '.join(map(str, bad))} is not a finetuning.py field.")

    grid_raw = raw["grid"]
    if not isinstance(grid_raw, dict):
        raise SweepSpecError(f"{path}: 'grid' must map finetuning fields to lists of values.")
    check_fields("grid", grid_raw)
    grid = {}
    for key, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise SweepSpecError(f"{path}: grid.{key} must be a non-empty list of values.")
        values = [_as_list_field(value, list_fields, key) for value in values]
        if len({repr(value) for value in values}) != len(values):
            raise SweepSpecError(f"{path}: grid.{key} lists a value twice.")
        grid[key] = values

    controls = []
    names = set()
    for index, control in enumerate(raw.get("controls") or []):
        where = f"controls[{index}]"
        if (
            not isinstance(control, dict)
            or set(control) - CONTROL_KEYS
            or "name" not in control
            or "set" not in control
        ):
            raise SweepSpecError(f"{path}: {where} must be a mapping with 'name', 'set' and optionally 'over'.")
        name = str(control["name"])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == GRID_CELL_KIND or name in names:
            raise SweepSpecError(
                f"{path}: {where}: name '{name}' must be unique, not '{GRID_CELL_KIND}', "
                "and made of letters, digits, '_', '.', '-'."
            )
        names.add(name)
        if not isinstance(control["set"], dict) or not control["set"]:
            raise SweepSpecError(f"{path}: {where}.set must map finetuning fields to values.")
        check_fields(f"{where}.set", control["set"])
        over = control.get("over", ["seed"] if "seed" in grid else [])
        if not isinstance(over, list) or any(key not in grid for key in over):
            raise SweepSpecError(f"{path}: {where}.over must list grid keys ({', '.join(grid)}).")
        overlap = sorted(set(over) & set(control["set"]))
        if overlap:
            raise SweepSpecError(f"{path}: {where} both sets and is crossed over {', '.join(overlap)}.")
        settings = {key: _as_list_field(value, list_fields, key) for key, value in control["set"].items()}
        controls.append({"name": name, "set": settings, "over": list(over)})

    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise SweepSpecError(f"{path}: 'train' must map finetuning fields to values.")
    check_fields("train", train)
    named = sorted(set(train) & (set(grid) | {key for control in controls for key in control["set"]}))
    if named:
        raise SweepSpecError(f"{path}: train sets {', '.join(named)}, which the grid or a control also sets.")
    train = {key: _as_list_field(value, list_fields, key) for key, value in train.items()}

    evaluate = raw.get("evaluate") or {}
    if not isinstance(evaluate, dict):
        raise SweepSpecError(f"{path}: 'evaluate' must map evaluate.py flags to values.")
    spec = SweepSpec(
        path=path,
        base_config=base_config,
        output_dir=Path(raw["output_dir"]).absolute(),
        grid=grid,
        controls=controls,
        evaluate=dict(evaluate),
        train=train,
    )
    seen = {}
    for cell in spec.cells():
        if cell.name in seen:  # e.g. two values that print alike (1 and 1.0)
            raise SweepSpecError(f"{path}: cells {seen[cell.name]} and {cell.settings} get the same name {cell.name}.")
        seen[cell.name] = cell.settings
    return spec
