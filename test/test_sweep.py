"""Sweep specs: grid expansion, deterministic cell names, finetuning flags, one-line spec errors."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from soo.sweep import SweepSpecError, finetuning_flags, load_sweep
from soo.train.config import parse_finetuning_args

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "smollm2-135m-instruct.yaml"


def write_spec(tmp_path, **values) -> Path:
    spec = {
        "base_config": str(BASE),
        "output_dir": str(tmp_path / "sweep"),
        "grid": {"soo_layers": [5, 10], "seed": [0, 1]},
    }
    spec.update(values)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_and_controls_expand_to_named_cells_in_spec_order(tmp_path):
    spec = load_sweep(write_spec(tmp_path, controls=[{"name": "lm_only", "set": {"soo_weight": 0}}]))
    cells = spec.cells()
    assert [cell.name for cell in cells] == [
        "soo_layers-5__seed-0",
        "soo_layers-5__seed-1",
        "soo_layers-10__seed-0",
        "soo_layers-10__seed-1",
        "lm_only__seed-0",
        "lm_only__seed-1",  # a control is crossed with the seeds by default
    ]
    assert cells[2].settings == {"soo_layers": [10], "seed": 0}  # a scalar for a list field is a one-item list
    assert cells[5].kind == "lm_only" and cells[5].settings == {"soo_weight": 0, "seed": 1}
    assert spec.cell_dir(cells[0]) == tmp_path / "sweep" / "soo_layers-5__seed-0"
    assert [cell.name for cell in load_sweep(spec.path).cells()] == [cell.name for cell in cells]  # stable on reread


def test_cell_flags_parse_as_finetuning_arguments(tmp_path):
    spec = load_sweep(
        write_spec(
            tmp_path,
            grid={"soo_layers": [[3, 7]], "soo_weight": [0.5], "use_chat_template": [False]},
            controls=[{"name": "lm_only", "set": {"soo_weight": 0}, "over": []}],
        )
    )
    grid_cell, control = spec.cells()
    assert grid_cell.name == "soo_layers-3+7__soo_weight-0.5__use_chat_template-false"
    flags = finetuning_flags(grid_cell.settings)
    assert flags == ["--soo_layers", "3", "7", "--soo_weight", "0.5", "--use_chat_template", "false"]
    model_args, data_args, config, _ = parse_finetuning_args(
        ["--config", str(BASE), "--output_dir", str(spec.cell_dir(grid_cell)), *flags]
    )
    assert config.soo_layers == [3, 7] and config.soo_weight == 0.5 and data_args.use_chat_template is False
    assert config.lm_weight == 1.0  # the base config's value where the cell says nothing
    _, _, control_config, _ = parse_finetuning_args(["--config", str(BASE), *finetuning_flags(control.settings)])
    assert control.name == "lm_only" and control_config.soo_weight == 0


def test_train_flags_reach_every_cell_without_naming_it(tmp_path):
    from soo.sweep.run import cell_commands

    spec = load_sweep(
        write_spec(
            tmp_path,
            train={"deepspeed": "ds_config_stage3.json", "lora_target_modules": "q_proj"},
            controls=[{"name": "lm_only", "set": {"soo_weight": 0}}],
        )
    )
    for cell in spec.cells():
        assert "deepspeed" not in cell.name
        command = cell_commands(spec, cell)["train"]
        flags = command[command.index("--output_dir") + 2 :]
        assert flags[:4] == ["--deepspeed", "ds_config_stage3.json", "--lora_target_modules", "q_proj"], flags
        model_args, _, config, _ = parse_finetuning_args(["--config", str(BASE), *flags])
        assert config.deepspeed == "ds_config_stage3.json" and model_args.lora_target_modules == ["q_proj"]


@pytest.mark.parametrize(
    "values, message",
    [
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
        ({"train": {"seed": 3}}, "train sets seed, which the grid or a control also sets"),
        ({"train": {"nope": 3}}, "train: nope is not a finetuning.py field"),
    ],
)
def test_bad_specs_are_refused_in_one_line(tmp_path, values, message):
    with pytest.raises(SweepSpecError) as error:
        load_sweep(write_spec(tmp_path, **values))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_specs_are_refused_in_one_line(tmp_path):
    with pytest.raises(SweepSpecError, match="sweep spec.: no such file"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(SweepSpecError, match="YAML syntax error at line"):
        load_sweep(bad)


# --------------------------------------------------------------------------------------------
# Running cells (soo.sweep.run): local executor, state files, resume


def tiny_sweep(tmp_path, tiny_model_dir, data_files, grid, controls=()):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model_dir),
                "data_path": str(data_files[0]),
                "max_steps": 1,
                "use_cpu": True,
                "report_to": "none",
                "disable_tqdm": True,
                "soo_layers": [1],
                "learning_rate": 5e-2,
            }
        )
    )
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "base_config": str(base),
                "output_dir": str(tmp_path / "sweep"),
                "grid": grid,
                "controls": list(controls),
                "evaluate": {
                    "protocol": "forced_choice",
                    "n": 1,
                    "scenarios": ["main"],
                    "no_capability": True,
                    "n_pairs": 4,
                },
            }
        )
    )
    return load_sweep(spec)


def test_local_sweep_runs_cells_skips_done_ones_and_reports_failures(tmp_path, tiny_model_dir, data_files, monkeypatch):
    from soo.sweep import run

    # soo_layers 99 does not exist in the 4-layer model: finetuning.py refuses it (exit 2).
    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"soo_layers": [2, 99]})
    states = run.run_local(spec, jobs=1, log=lambda *_: None)
    assert states == {"soo_layers-2": "done", "soo_layers-99": "failed"}
    good, bad = spec.cells()
    assert (spec.cell_dir(good) / "eval" / "results.json").is_file()
    assert (spec.cell_dir(good) / "train" / "adapter_model.safetensors").is_file()
    # The report reads what evaluate.py really wrote (a fixture of its own making once hid a wrong key).
    from soo.sweep.report import read_cell

    figures = read_cell(spec, good)
    assert figures.layer == 2 and 0 < figures.latent_base and 0 < figures.latent_adapter
    assert math.isfinite(figures.change) and math.isfinite(figures.latent_change)
    lines, counts = run.status_table(spec)
    assert counts["done"] == 1 and counts["failed"] == 1
    assert any(line.startswith("failed") and "soo_layers-99" in line and "train exit 2" in line for line in lines)
    assert "SOO layer 99 is out of range" in (spec.cell_dir(bad) / "cell.log").read_text()

    # A rerun leaves the done cell alone and runs the failed one again.
    started = []
    real_run = run._run_child
    monkeypatch.setattr(
        run, "_run_child", lambda command, log_file: started.append(command) or real_run(command, log_file)
    )
    assert run.run_local(spec, jobs=2, log=lambda *_: None)["soo_layers-99"] == "failed"
    assert [command[1].endswith("finetuning.py") for command in started] == [True]
    assert all("--soo_layers" in command and "99" in command for command in started)


def test_preempted_and_killed_cells_are_resumable(tmp_path, tiny_model_dir, data_files):
    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0]})
    (cell,) = spec.cells()
    stopped = tmp_path / "stopped-python"
    stopped.write_text("#!/bin/sh\nexit 75\n")  # what finetuning.py returns after a USR1/TERM checkpoint
    stopped.chmod(0o755)
    assert run.run_cell(spec, cell, python=str(stopped), log=lambda *_: None) == "preempted"
    assert run.cell_state(spec, cell)[0] == "preempted"
    # A running marker whose process is gone (a killed executor) is not "running" forever.
    run._set_state(spec.cell_dir(cell), "running", {"host": run.socket.gethostname(), "pid": 2**22 + 12345})
    state, record = run.cell_state(spec, cell)
    assert state == "failed" and "process is gone" in record["reason"]
    assert run.run_local(spec, log=lambda *_: None) == {"seed-0": "done"}
    assert run.cell_state(spec, cell)[0] == "done"


def test_sweep_cli_lists_cells_reports_status_and_refuses_bad_input(tmp_path, capsys):
    import sweep

    spec = write_spec(tmp_path, controls=[{"name": "lm_only", "set": {"soo_weight": 0}}])
    assert sweep.main(["cells", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "[5] lm_only__seed-1" in out and "--soo_weight 0 --seed 1" in out and "evaluate.py --adapters" in out
    assert sweep.main(["status", str(spec)]) == 1  # nothing has run
    out = capsys.readouterr().out
    assert out.count("\npending ") + out.startswith("pending ") == 6 and "6 cells: 6 pending" in out
    assert sweep.main(["run-cell", str(spec), "--index", "6"]) == 2
    assert capsys.readouterr().err == "error: --index 6: the sweep has 6 cells (0..5)\n"
    assert sweep.main(["status", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def fake_finished_cell(spec, cell, base_p, adapter_p, latent_base, latent_adapter, layer):
    """A cell folder as run_cell leaves it, with the parts of evaluate.py's results.json the report reads."""
    from soo.sweep import run

    folder = spec.cell_dir(cell)
    (folder / "eval").mkdir(parents=True)
    summary = [
        {"condition": name, "scenario": scenario, "order_averaged": {"mean": p + shift, "ci95": 0.01, "n": 50}}
        for name, p in (("base", base_p), ("soo_0", adapter_p))
        for scenario, shift in (("main", 0), ("action", 0.1))
    ]
    results = {
        "conditions": [{"name": "base"}, {"name": "soo_0"}],
        "forced_choice": {"summary": summary},
        "trained_layers": [layer],
        "latent_soo": {
            "base": {str(layer): {"soo_loss": latent_base}},
            "soo_0": {str(layer): {"soo_loss": latent_adapter}},
        },
    }
    (folder / "eval" / "results.json").write_text(json.dumps(results))
    run._set_state(folder, "done", {"seconds": {"train": 1, "evaluate": 1}})


def test_report_gives_seed_means_intervals_controls_and_the_best_of_many_warning(tmp_path):
    from soo.core.stats import mean_t_ci95
    from soo.sweep.report import write_sweep_report

    spec = load_sweep(
        write_spec(
            tmp_path,
            grid={"soo_layers": [5, 10], "seed": [0, 1, 2]},
            controls=[{"name": "lm_only", "set": {"soo_weight": 0}}],
        )
    )
    falls = {5: [-0.10, -0.20, -0.30], 10: [0.01, -0.02, 0.04]}
    for cell in spec.cells():
        seed = cell.settings["seed"]
        if cell.kind == "grid":
            layer = cell.settings["soo_layers"][0]
            change = falls[layer][seed]
        elif seed == 2:
            continue  # one control seed has not finished
        else:
            layer, change = 15, -0.05
        fake_finished_cell(spec, cell, 0.8, 0.8 + change, 0.2, 0.1, layer)

    folder = write_sweep_report(spec)
    settings = list(csv.DictReader((folder / "settings.csv").open()))
    assert [(s["kind"], s["setting"], s["n_seeds"]) for s in settings] == [
        ("grid", "soo_layers=5", "3"),
        ("grid", "soo_layers=10", "3"),
        ("lm_only", "lm_only (soo_weight=0)", "2"),
    ]
    mean, half = mean_t_ci95(falls[5])
    assert float(settings[0]["change"]) == pytest.approx(mean) and float(settings[0]["change_ci95"]) == pytest.approx(
        half
    )
    assert float(settings[0]["latent_change"]) == pytest.approx(-0.1)
    assert len(list(csv.DictReader((folder / "cells.csv").open()))) == 8
    report = (folder / "report.md").read_text()
    assert "8 of 9 cells finished; not finished: lm_only__seed-2" in report
    assert "**Best of 2 settings.** `soo_layers=5` has the largest fall, -0.200" in report
    assert "| lm_only | lm_only (soo_weight=0) | 2 | -0.050 ± 0.000 |" in report
    # Paired with the control over the 2 seeds both have: layer 5 -> -0.05, -0.15.
    from soo.core.stats import mean_t_interval

    paired = [-0.10 + 0.05, -0.20 + 0.05]
    mean, half = mean_t_ci95(paired)
    corrected = mean_t_interval(paired, 1 - 0.05 / 2)[1]
    assert float(settings[0]["minus_lm_only_mean"]) == pytest.approx(mean)
    assert float(settings[0]["minus_lm_only_ci95"]) == pytest.approx(half)
    assert float(settings[0]["minus_lm_only_bonferroni_ci95"]) == pytest.approx(corrected) and corrected > half
    assert settings[0]["minus_lm_only_n"] == "2" and settings[2]["minus_lm_only_mean"] == ""
    assert f"{mean:+.3f} ± {half:.3f} ({mean:+.3f} ± {corrected:.3f}), n=2 |" in report
    assert (folder / "change_heatmap.png").stat().st_size > 1000


def test_a_stop_signal_reaches_the_running_child_and_leaves_the_cell_preempted(tmp_path, tiny_model_dir, data_files):
    import signal
    import subprocess
    import sys
    import time

    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0]})
    ready = tmp_path / "ready"
    waiting = tmp_path / "waiting-python"  # stands in for finetuning.py: checkpoint-and-exit-75 on USR1
    waiting.write_text(f"#!/bin/sh\ntrap 'exit 75' USR1\ntouch {ready}\nwhile :; do sleep 0.1; done\n")
    waiting.chmod(0o755)
    code = (
        "import sys; from soo.sweep import load_sweep; from soo.sweep.run import forward_stop_signals, run_cell; "
        "forward_stop_signals(); spec = load_sweep(sys.argv[1]); "
        "print(run_cell(spec, spec.cells()[0], python=sys.argv[2], log=lambda *_: None))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(spec.path), str(waiting)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert ready.exists(), "the child never started"
    process.send_signal(signal.SIGTERM)  # what scancel sends the batch step
    out, _ = process.communicate(timeout=60)
    assert out.strip() == "preempted"
    state, record = run.cell_state(spec, spec.cells()[0])
    assert state == "preempted" and record["exit_code"] == 75 and record["step"] == "train"


def test_a_training_that_exits_0_without_an_adapter_leaves_the_cell_failed(tmp_path, tiny_model_dir, data_files):
    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0]})
    (cell,) = spec.cells()
    calls = tmp_path / "calls"
    silent = tmp_path / "silent-python"
    silent.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexit 0\n')  # as srun on a failed node: 0, nothing saved
    silent.chmod(0o755)
    assert run.run_cell(spec, cell, python=str(silent), log=lambda *_: None) == "failed"
    state, record = run.cell_state(spec, cell)
    assert state == "failed" and record["step"] == "train" and "without saving the adapter" in record["reason"]
    assert [Path(line).name for line in calls.read_text().split()] == ["finetuning.py"]  # no evaluation of nothing


def test_a_trained_cell_is_only_evaluated_again(tmp_path, tiny_model_dir, data_files):
    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0]})
    (cell,) = spec.cells()
    (spec.cell_dir(cell) / "train").mkdir(parents=True)
    (spec.cell_dir(cell) / "train" / "adapter_model.safetensors").write_bytes(b"trained")
    calls = tmp_path / "calls"
    recorder = tmp_path / "recording-python"
    recorder.write_text(f'#!/bin/sh\necho "$1" >> {calls}\n')
    recorder.chmod(0o755)
    assert run.run_cell(spec, cell, python=str(recorder), log=lambda *_: None) == "done"
    assert [Path(line).name for line in calls.read_text().split()] == ["evaluate.py"]


def test_a_cell_another_live_process_runs_is_left_to_it(tmp_path, tiny_model_dir, data_files):
    from soo.core.cell_lock import CellLock
    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0]})
    (cell,) = spec.cells()
    lines = []
    with CellLock(spec.cell_dir(cell), cell.name) as held:  # this live process is the other runner
        assert held.acquired
        assert run.run_local(spec, log=lines.append) == {"seed-0": run.SKIPPED}
    assert not (spec.cell_dir(cell) / "cell.log").exists()
    assert f"cell seed-0 is being trained by pid {run.os.getpid()} on host {run.socket.gethostname()}" in lines[1]
    assert lines[-1] == "skipped 1 cell(s) another runner trained or is training: seed-0"


# --------------------------------------------------------------------------------------------
# Slurm submission (soo.sweep.slurm); the arrays themselves run in test_slurm.py


@pytest.mark.parametrize(
    "indices, expected", [([0, 1, 2, 5, 7, 8], "0-2,5,7-8"), ([3], "3"), ([4, 2, 3, 2], "2-4"), ([0, 2, 4], "0,2,4")]
)
def test_array_ranges_are_slurm_array_lists(indices, expected):
    from soo.sweep.slurm import array_ranges

    assert array_ranges(indices) == expected


def test_submit_sends_only_cells_not_done_and_not_in_the_queue(tmp_path, monkeypatch, capsys):
    import sweep
    from soo.sweep import run

    spec = load_sweep(write_spec(tmp_path))  # 4 cells
    cells = spec.cells()
    for cell in cells:
        spec.cell_dir(cell).mkdir(parents=True)
    run._set_state(spec.cell_dir(cells[0]), "done", {})
    # Cells 1 and 2 are marked running by array tasks on other hosts: squeue lists 77_1, not 77_2.
    for index in (1, 2):
        run._set_state(
            spec.cell_dir(cells[index]),
            "running",
            {"host": "node-elsewhere", "pid": 1, "slurm_job_id": "77", "slurm_task_id": str(index)},
        )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text('#!/bin/sh\n[ "$3" = 77_1 ] && echo "77_1 RUNNING"\nexit 0\n')
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(REPO)  # where submit_sweep.sh is
    assert sweep.main(["submit", str(spec.path), "--throttle", "3", "--dry_run", "--", "-A", "project_x"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) to run (1 done, 1 running, 1 failed, 1 pending)" in out, out
    assert f"sbatch --parsable --array=2-3%3 -A project_x submit_sweep.sh {spec.path}" in out


def test_submit_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    import sweep

    spec = write_spec(tmp_path)
    monkeypatch.chdir(tmp_path)  # no submit_sweep.sh here
    assert sweep.main(["submit", str(spec), "--", "-A", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: submit_sweep.sh not found in ")
    with pytest.raises(SystemExit) as exit_info:  # sbatch arguments for a command that has none
        sweep.main(["status", str(spec), "--", "-A", "x"])
    assert exit_info.value.code == 2 and "for `submit` only" in capsys.readouterr().err


def test_cells_side_by_side_share_the_cores(tmp_path, tiny_model_dir, data_files, monkeypatch):
    from soo.sweep import run

    spec = tiny_sweep(tmp_path, tiny_model_dir, data_files, {"seed": [0, 1]})
    seen = tmp_path / "threads"
    recorder = tmp_path / "recording-python"
    # Records the threads each child gets, and saves an "adapter" as a finished training does.
    recorder.write_text(
        f'#!/bin/sh\necho "$OMP_NUM_THREADS" >> {seen}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --output_dir ] && mkdir -p "$2" && touch "$2/adapter_model.safetensors"; shift; done\n'
    )
    recorder.chmod(0o755)
    monkeypatch.setenv("OMP_NUM_THREADS", "unset")  # so that monkeypatch restores it afterwards ...
    monkeypatch.delenv("OMP_NUM_THREADS")  # ... whatever run_local sets
    monkeypatch.setattr(run.os, "cpu_count", lambda: 8)
    assert run.run_local(spec, jobs=2, python=str(recorder), log=lambda *_: None) == {
        "seed-0": "done",
        "seed-1": "done",
    }
    assert seen.read_text().split() == ["4"] * 4  # 8 cores / 2 cells, for both children of both cells
