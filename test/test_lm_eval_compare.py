"""Capability retention through lm-evaluation-harness (soo/tools/lm_eval_compare.py): paired
deltas, and a tiny model + adapter on the bundled offline task. Skipped without lm-eval
(requirements-eval.txt)."""

from __future__ import annotations

import json
import math

import pytest

from soo.tools.lm_eval_compare import compare, paired_delta


def test_paired_delta_is_the_mean_difference_and_its_standard_error():
    result = paired_delta([1, 0, 1, 1], [1, 1, 0, 1])
    assert result["delta"] == 0.0 and result["n"] == 4
    differences = [0, 1, -1, 0]
    sd = math.sqrt(sum(d * d for d in differences) / 3)
    assert result["se"] == pytest.approx(sd / 2)
    assert paired_delta([0.0], [1.0])["delta"] == 1.0 and math.isnan(paired_delta([0.0], [1.0])["se"])


def test_compare_pairs_items_by_id_and_keeps_lm_evals_standard_errors():
    def result(accs):
        return {
            "results": {"t": {"acc,none": sum(accs.values()) / len(accs), "acc_stderr,none": 0.1}},
            "samples": {"t": [{"doc_id": i, "acc": a} for i, a in accs.items()]},
        }

    (row,) = compare(result({0: 1, 1: 0, 2: 1}), result({2: 0, 1: 1, 0: 1}))
    assert row["task"] == "t" and row["metric"] == "acc" and row["n"] == 3
    assert row["delta"] == pytest.approx(0.0) and row["base_se"] == 0.1
    assert row["se"] == pytest.approx(math.sqrt(((0 - 0) ** 2 + 1 + 1) / 2) / math.sqrt(3))


def test_a_tiny_adapter_against_its_base_on_the_bundled_task(tiny_adapter_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lm_eval")
    from soo.tools.lm_eval_compare import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # not the repository root: the bundled task's data must still be found
    assert main([str(tiny_adapter_dir), "--limit", "6", "--output_file", "compare.json"]) == 0
    output = tmp_path / "compare.json"
    rows = json.loads(output.read_text())["rows"]
    assert [(row["task"], row["metric"], row["n"]) for row in rows] == [
        ("soo_capability", "acc", 6),
        ("soo_capability", "acc_norm", 6),
    ]
    assert all(-1 <= row["delta"] <= 1 and 0 <= row["base"] <= 1 for row in rows)
    assert "| soo_capability | acc | 6 |" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, tiny_adapter_dir, capsys):
    pytest.importorskip("lm_eval")
    from soo.tools.lm_eval_compare import main

    assert main([str(tmp_path)]) == 2
    assert "holds no adapter_config.json" in capsys.readouterr().err
    assert main([str(tiny_adapter_dir), "--tasks", "no_such_task"]) == 2
    assert "unknown lm-eval task(s) no_such_task" in capsys.readouterr().err
