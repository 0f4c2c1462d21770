"""The benchmark scripts run end to end on a tiny model (not timed: only so their code cannot rot)."""

from __future__ import annotations

from benchmarks import training


def test_training_benchmark_runs_every_variant_and_writes_its_report(tiny_model_dir, tmp_path, capsys):
    report = tmp_path / "bench.md"
    assert training.main(["--model", str(tiny_model_dir), "--soo-layer", "2", "--repeats", "1", "--steps", "1",
                          "--report", str(report)]) == 0
    text = report.read_text()
    for variant in training.VARIANTS:
        assert f"| {variant} |" in text, variant
    for numerator, denominator, _, _ in training.RATIOS:
        assert f"| {numerator} / {denominator} |" in text
    assert "| ratio |" in capsys.readouterr().out
