"""The benchmark scripts run end to end on a tiny model (not timed: only so their code cannot rot)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import training


def test_training_benchmark_runs_every_variant_and_writes_its_report(tiny_model_dir, tmp_path, capsys):
    report = tmp_path / "bench.md"
    assert (
        training.main(
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--soo_layer",
                "2",
                "--repeats",
                "1",
                "--steps",
                "1",
                "--output_file",
                str(report),
            ]
        )
        == 0
    )
    text = report.read_text()
    for variant in training.VARIANTS:
        assert f"| {variant} |" in text, variant
    for numerator, denominator, _, _ in training.RATIOS:
        assert f"| {numerator} / {denominator} |" in text
    assert "| ratio |" in capsys.readouterr().out


def test_peak_memory_benchmark_measures_the_child_run(tiny_model_dir, data_files, tmp_path, capsys):
    from benchmarks import peak_memory

    train_path, _ = data_files
    report = tmp_path / "bench.md"
    extra = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data_path",
        str(train_path),
        "--eval_data_path",
        str(train_path),
        "--soo_layers",
        "2",
        "--max_steps",
        "1",
        "--use_cpu",
        "--report_to",
        "none",
        "--output_dir",
        str(tmp_path / "run"),
    ]
    assert peak_memory.main(["--output_file", str(report), "--", *extra]) == 0
    row = [line for line in report.read_text().splitlines() if line.startswith("| `python finetuning.py")][0]
    peak_gb = float(row.split("|")[4])
    assert 0.05 < peak_gb < 3.0, row  # a real Python + torch process, far below the target on a tiny model
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_efficiency_benchmark_counts_flops_and_profiles_a_step(tiny_model_dir, tmp_path, capsys):
    from benchmarks import efficiency

    report = tmp_path / "bench.md"
    assert (
        efficiency.main(
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--soo_layer",
                "2",
                "--repeats",
                "1",
                "--matmul_size",
                "256",
                "--output_file",
                str(report),
            ]
        )
        == 0
    )
    text = report.read_text()
    assert "## Efficiency against the machine" in text and "`aten::mm`" in text
    row = [line for line in text.splitlines() if line.startswith("| ") and " G |" in line][0]
    assert float(row.split("|")[1].strip().rstrip(" G")) > 0, row  # FLOPs were counted


def test_benchmarks_entry_point_runs_every_part_in_order(monkeypatch):
    import benchmarks.__main__ as entry

    calls = []
    for name in ("training", "efficiency", "peak_memory", "generation"):
        monkeypatch.setattr(getattr(entry, name), "main", lambda argv, name=name: calls.append(name) or 0)
    assert entry.main([]) == 0
    assert calls == ["training", "efficiency", "peak_memory", "generation"]  # training first: it replaces the report
    calls.clear()
    assert entry.main(["--skip_generation"]) == 0
    assert calls == ["training", "efficiency", "peak_memory"]


def test_protocol_benchmark_times_each_evaluate_run(tiny_adapter_dir, tmp_path, capsys):
    from benchmarks import protocol

    report = tmp_path / "bench.md"
    code = protocol.main(
        [
            "--adapters",
            str(tiny_adapter_dir),
            "--protocols",
            "forced_choice",
            "--n",
            "1",
            "--output_file",
            str(report),
            "--",
            "--scenarios",
            "main",
            "--no_capability",
            "--n_pairs",
            "4",
        ]
    )
    assert code == 0
    row = [line for line in report.read_text().splitlines() if line.startswith("| forced_choice |")][0]
    assert 0.05 < float(row.split("|")[5]) < 3.0, row  # a real child's peak RSS, in GB
    assert protocol.main(["--adapters", str(tmp_path / "nope"), "--output_file", ""]) == 2


def test_scoring_benchmark_compares_the_methods_on_equal_scores(tiny_model_dir, tmp_path, capsys):
    from benchmarks import scoring

    report = tmp_path / "bench.md"
    assert (
        scoring.main(
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--n",
                "1",
                "--prompts",
                "8",
                "--batch_size",
                "4",
                "--repeats",
                "1",
                "--output_file",
                str(report),
            ]
        )
        == 0
    )
    assert "prompts: 8 of the 26 " in report.read_text()
    rows = [line for line in report.read_text().splitlines() if line.startswith("| ") and "x |" in line]
    assert [row.split("|")[1].strip() for row in rows] == list(scoring.METHODS)
    assert all(float(row.split("|")[5]) < 1e-3 for row in rows), rows  # every method gives the same scores
    capsys.readouterr()
    assert scoring.main(["--model_name_or_path", str(tmp_path / "missing"), "--output_file", ""]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_gpu_check_dry_run_runs_every_section_on_cpu(tmp_path, capsys):
    from benchmarks import gpu_check

    report = tmp_path / "gpu.md"
    assert gpu_check.main(["--dry_run", "--output_file", str(report)]) == 0
    text = report.read_text()
    assert "FAILED" not in text and "DRY RUN" in text
    for title in (
        "## Environment",
        "## Training steps",
        "## QLoRA step",
        "## Batched generation",
        "## Forced-choice scoring",
        "## evaluate.py on the GPU",
    ):
        assert title in text, title
    for model in gpu_check.MODELS:
        row = [line for line in text.splitlines() if line.startswith(f"| {model} | bf16 |") and "B |" in line][0]
        cells = [cell.strip() for cell in row.split("|")]
        assert float(cells[7]) > 0, row  # step FLOPs were counted (TFLOPs column)
        assert float(cells[11]) > 0, row  # soo.tools.memory gave an estimate
    # Gemma-2's injected outlier stays finite in bf16 (the fp16 half of the guard check needs a GPU).
    assert "| gemma2-2b | bf16 | loss finite" in text
    assert "Skipped: 4-bit loading needs a CUDA GPU" in text
    scoring_row = [line for line in text.splitlines() if line.startswith("| 16 | ")][0]
    assert float(scoring_row.split("|")[5]) < 1e-3, scoring_row  # batch size does not change the scores


def test_gpu_check_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    from benchmarks import gpu_check

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output_file", str(tmp_path / "gpu.md")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no CUDA GPU is visible") and error.count("\n") == 1
    assert not (tmp_path / "gpu.md").exists()
    for bad in (["--gen_n", "2", "--gen_sequential_n", "3"], ["--sections", "nope"], ["--steps", "0"]):
        try:
            gpu_check.main(["--dry_run", *bad])
        except SystemExit as exit_:
            assert exit_.code == 2, bad
        else:
            raise AssertionError(f"{bad} was accepted")


def test_gpu_check_runs_the_registered_sections_in_the_order_asked(tmp_path, monkeypatch):
    """The dispatcher looks each --sections name up in the registry; a failing section is reported
    and the run goes on (exit 1)."""
    from benchmarks import gpu_check

    calls = []

    def broken(check):
        raise RuntimeError("boom")

    monkeypatch.setitem(
        gpu_check.SECTIONS,
        "scoring",
        lambda check: calls.append(check.args.sections) or check.report.add("Scored", ["ok"]),
    )
    monkeypatch.setitem(gpu_check.SECTIONS, "environment", broken)
    report = tmp_path / "gpu.md"
    assert gpu_check.main(["--dry_run", "--sections", "scoring", "environment", "--output_file", str(report)]) == 1
    text = report.read_text()
    assert calls == [["scoring", "environment"]]
    assert text.index("## Scored") < text.index("## environment: FAILED") and "`RuntimeError: boom`" in text
    assert "FAILED sections: environment" in text


class _Defaults(Exception):
    pass


@pytest.mark.parametrize(
    "name, report",
    [
        ("training", "training"),
        ("efficiency", "training"),
        ("peak_memory", "training"),
        ("generation", "generation"),
        ("protocol", "evaluation"),
        ("scoring", "scoring"),
        ("rl_speed", "rl"),
        ("gpu_check", "gpu"),
    ],
)
def test_reports_go_outside_docs_by_default(name, report, monkeypatch):
    """docs/ holds only reports committed on purpose: a benchmark run without --output_file writes
    under the git-ignored results/ folder."""
    import importlib

    def defaults_only(parser, args=None, namespace=None):
        raise _Defaults(parser.get_default("output_file"))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", defaults_only)
    with pytest.raises(_Defaults) as default:
        importlib.import_module(f"benchmarks.{name}").main([])
    assert default.value.args[0] == f"results/benchmarks/{report}.md"


def test_rl_speed_benchmark_finds_the_same_numbers_both_ways(tmp_path, capsys):
    """The sped-up RL code (raw env step, lean actor call, scalar distances) gives bit-identical
    training curves, weights and evaluation to the code before it (patched back in): exit 0."""
    from benchmarks import rl_speed

    report = tmp_path / "rl.md"
    assert rl_speed.main(["--episodes", "40", "--repeats", "1", "--output_file", str(report)]) == 0
    text = report.read_text()
    assert "numbers **identical** (equal fingerprints)" in text and "| before |" in text and "| after |" in text
    assert rl_speed.main(["--output_file", str(tmp_path)]) == 2  # a folder: refused before any work


def test_neighbour_blocks_sample_evenly_spaced_runs_of_sorted_neighbours():
    from benchmarks.generation_methods import neighbour_blocks

    keys = [[9 - value // 2, value] for value in range(20)]  # sorted order: 18 19 16 17 ... 0 1
    assert neighbour_blocks(keys, 4, 2) == [18, 19, 8, 9]  # blocks 0 and 5 of 10
    assert neighbour_blocks(keys, 3, 2) == [18, 19, 8]
    assert neighbour_blocks(keys, 30, 4) == sorted(range(20), key=keys.__getitem__)  # all, in batch order


def test_generation_benchmark_times_each_batching_on_protocol_neighbours(tiny_model_dir, tmp_path):
    from benchmarks import generation

    report = tmp_path / "gen.md"
    assert (
        generation.main(
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--n",
                "8",
                "--pool_n",
                "20",
                "--batch_sizes",
                "4",
                "--repeats",
                "1",
                "--max_new_tokens",
                "3",
                "--output_file",
                str(report),
            ]
        )
        == 0
    )
    text = report.read_text()
    assert "2 evenly spaced blocks of 4 neighbours" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "x |" in line}
    assert list(rows) == [
        "one at a time",
        "batched 4, whole prompts",
        "batched 4, shared prefix",
        "batched 4, shared prefix + groups",
    ]
    assert all("8/8 (100.0%)" in row for row in rows.values()), rows
    assert "shared prefix + groups" in text.split("Prefill-only passes")[1]
