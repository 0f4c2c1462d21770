"""Sweep specs: grid expansion, deterministic cell names, finetuning flags, one-line spec errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soo.sweep import SweepSpecError, finetuning_flags, load_sweep
from soo.train.config import parse_finetuning_args

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "smollm2-135m-instruct.yaml"


def write_spec(tmp_path, **values) -> Path:
    spec = {"base_config": str(BASE), "output_dir": str(tmp_path / "sweep"),
            "grid": {"soo_layers": [5, 10], "seed": [0, 1]}}
    spec.update(values)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_and_controls_expand_to_named_cells_in_spec_order(tmp_path):
    spec = load_sweep(write_spec(tmp_path, controls=[{"name": "lm_only", "set": {"soo_weight": 0}}]))
    cells = spec.cells()
    assert [cell.name for cell in cells] == [
        "soo_layers-5__seed-0", "soo_layers-5__seed-1", "soo_layers-10__seed-0", "soo_layers-10__seed-1",
        "lm_only__seed-0", "lm_only__seed-1",  # a control is crossed with the seeds by default
    ]
    assert cells[2].settings == {"soo_layers": [10], "seed": 0}  # a scalar for a list field is a one-item list
    assert cells[5].kind == "lm_only" and cells[5].settings == {"soo_weight": 0, "seed": 1}
    assert spec.cell_dir(cells[0]) == tmp_path / "sweep" / "soo_layers-5__seed-0"
    assert [cell.name for cell in load_sweep(spec.path).cells()] == [cell.name for cell in cells]  # stable on reread


def test_cell_flags_parse_as_finetuning_arguments(tmp_path):
    spec = load_sweep(write_spec(tmp_path, grid={"soo_layers": [[3, 7]], "soo_weight": [0.5], "use_chat_template": [False]},
                                 controls=[{"name": "lm_only", "set": {"soo_weight": 0}, "over": []}]))
    grid_cell, control = spec.cells()
    assert grid_cell.name == "soo_layers-3+7__soo_weight-0.5__use_chat_template-false"
    flags = finetuning_flags(grid_cell.settings)
    assert flags == ["--soo_layers", "3", "7", "--soo_weight", "0.5", "--use_chat_template", "false"]
    model_args, data_args, config, _ = parse_finetuning_args(
        ["--config", str(BASE), "--output_dir", str(spec.cell_dir(grid_cell)), *flags])
    assert config.soo_layers == [3, 7] and config.soo_weight == 0.5 and data_args.use_chat_template is False
    assert config.lm_weight == 1.0  # the base config's value where the cell says nothing
    _, _, control_config, _ = parse_finetuning_args(["--config", str(BASE), *finetuning_flags(control.settings)])
    assert control.name == "lm_only" and control_config.soo_weight == 0


@pytest.mark.parametrize("values, message", [
    ({"extra": 1}, "unknown key(s) extra"),
    ({"grid": {"layers": [1]}}, "layers is not a finetuning.py field"),
    ({"grid": {"output_dir": ["a"]}}, "sets output_dir, which the sweep sets for each cell"),
    ({"grid": {"seed": []}}, "grid.seed must be a non-empty list"),
    ({"grid": {"seed": [0, 0]}}, "grid.seed lists a value twice"),
    ({"grid": {"soo_weight": [1, 1.0]}}, "get the same name"),
    ({"base_config": "nope.yaml"}, "base_config nope.yaml is not a file"),
    ({"controls": [{"name": "c", "set": {"soo_weight": 0}, "over": ["lr"]}]}, "over must list grid keys"),
    ({"controls": [{"name": "grid", "set": {"soo_weight": 0}}]}, "must be unique, not 'grid'"),
    ({"controls": [{"name": "c", "set": {"seed": 3}}]}, "both sets and is crossed over seed"),
])
def test_bad_specs_are_refused_in_one_line(tmp_path, values, message):
    with pytest.raises(SweepSpecError) as error:
        load_sweep(write_spec(tmp_path, **values))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_specs_are_refused_in_one_line(tmp_path):
    with pytest.raises(SweepSpecError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(SweepSpecError, match="YAML syntax error at line"):
        load_sweep(bad)
