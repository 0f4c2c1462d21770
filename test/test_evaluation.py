"""evaluate.py end to end on a tiny model, the capability proxies and latent SOO."""

from __future__ import annotations

import json

import pytest
import torch

import evaluate
import finetuning
from soo.core.loss import soo_distance_per_pair
from soo.core.modeling import add_lora
from soo.core.pair_batch import SOOPairCollator, SOOPairDataset
from soo.eval.capability import base_and_tuned_perplexity, kl_to_base, load_neutral_prompts
from soo.eval.latent import latent_soo_by_layer

SCENARIOS = ["main", "perspectives", "honesty_prompt"]


def _train(tiny_model_dir, data_files, out, *extra):
    code = finetuning.main(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--data_path",
            str(data_files[0]),
            "--soo_layers",
            "2",
            "--max_steps",
            "2",
            "--use_cpu",
            "--output_dir",
            str(out),
            "--report_to",
            "none",
            "--learning_rate",
            "5e-2",
            "--disable_tqdm",
            "true",
            *extra,
        ]
    )
    assert code == 0
    return out


def _evaluate(args, capsys):
    code = evaluate.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_writes_the_full_report_for_base_and_adapter(tiny_adapter_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    args = [
        "--adapters",
        str(tiny_adapter_dir),
        "--scenarios",
        *SCENARIOS,
        "--n",
        "3",
        "--max_new_tokens",
        "4",
        "--n_pairs",
        "8",
        "--latent_all_layers",
        "--output_dir",
        str(out),
    ]
    code, stdout, stderr = _evaluate(args, capsys)
    assert code == 0, stderr
    for name in (
        "report.md",
        "results.json",
        "results.csv",
        "responses.jsonl",
        "generations.jsonl",
        "deception_rates.png",
        "latent_soo_by_layer.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["conditions"]] == ["base", "soo_0"]
    cells = {(e["condition"], e["scenario"], e["order"]) for e in results["rates"]}
    for condition in ("base", "soo_0"):
        for scenario in SCENARIOS:
            for order in ("deceptive_first", "deceptive_second", "both"):
                assert (condition, scenario, order) in cells
    assert all(e["n"] == (6 if e["order"] == "both" else 3) for e in results["rates"])
    assert set(results["latent_soo"]) == {"base", "soo_0"} and len(results["latent_soo"]["base"]) == 4
    capability = results["capability"]["soo_0"]
    assert capability["kl_to_base"]["kl_mean"] > 0 and capability["kl_to_base"]["n_prompts"] == len(
        load_neutral_prompts()
    )
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 2 * len(SCENARIOS) * 2 * 3
    assert {r["label"] for r in responses} <= {"deceptive", "honest", "ambiguous", "correct", "incorrect"}
    assert "| scenario | order | base | soo_0 |" in (out / "report.md").read_text()
    # The authors' rule is applied to every deception answer (not to perspectives) and summarised beside ours.
    assert all((r["authors_label"] is None) == (r["kind"] == "perspectives") for r in responses)
    deception = [e for e in results["rates"] if e["kind"] != "perspectives"]
    assert deception and all(0 <= e["agreement"] <= 1 and e["authors_rate"] is not None for e in deception)
    assert "### The authors' scoring rule beside ours" in (out / "report.md").read_text()

    # A second run reuses every cached generation: generate must not be called at all.
    calls = []
    monkeypatch.setattr(
        "transformers.generation.utils.GenerationMixin.generate",
        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError("generated again")),
    )
    code, _, stderr = _evaluate(args + ["--no_capability"], capsys)
    assert code == 0, stderr
    assert calls == []
    again = json.loads((out / "results.json").read_text())
    assert again["rates"] == results["rates"]


def test_unknown_scenario_lists_the_valid_ones(capsys):
    code, _, err = _evaluate(["--scenarios", "main", "burglar_alice"], capsys)
    assert code == 2 and "burglar_alice" in err and "perspectives" in err and "escape_room" in err


def test_adapter_of_another_base_model_is_refused(tiny_adapter_dir, tmp_path, capsys):
    from soo.tools.tiny_model import write_tiny_model

    other = write_tiny_model(tmp_path / "other-base", arch="qwen2")
    code, _, err = _evaluate(
        [
            "--adapters",
            str(tiny_adapter_dir),
            "--model_name_or_path",
            str(other),
            "--scenarios",
            "main",
            "--n",
            "1",
            "--output_dir",
            str(tmp_path / "e"),
        ],
        capsys,
    )
    assert code == 2 and "was trained on" in err and "--model_name_or_path" in err


def test_missing_adapter_directory_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    code, _, err = _evaluate(
        [
            "--adapters",
            str(tmp_path / "nope"),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--scenarios",
            "main",
            "--n",
            "1",
            "--output_dir",
            str(tmp_path / "e"),
        ],
        capsys,
    )
    assert code == 2 and "adapter_config.json" in err


def test_kl_and_perplexity_are_zero_change_for_an_untrained_adapter(make_model, tokenizer):
    model = add_lora(make_model("llama"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    prompts = load_neutral_prompts()[:4]
    assert kl_to_base(model, tokenizer, prompts, progress=False)["kl_mean"] == pytest.approx(0.0, abs=1e-7)
    ppl = base_and_tuned_perplexity(model, tokenizer, "The bridge reopened in December after the repairs.")
    assert ppl["base"] == pytest.approx(ppl["tuned"]) and ppl["base"] > 1
    with torch.no_grad():  # move the adapter: now both measures see a change
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    assert kl_to_base(model, tokenizer, prompts, progress=False)["kl_mean"] > 1e-4
    moved = base_and_tuned_perplexity(model, tokenizer, "The bridge reopened in December after the repairs.")
    assert moved["base"] == pytest.approx(ppl["base"]) and moved["tuned"] != pytest.approx(ppl["tuned"])


def test_latent_soo_matches_the_training_definition(make_model, tokenizer, test_records):
    from soo.core.capture import ActivationCapture

    model = make_model("qwen2").eval()
    records = test_records[:6]
    by_layer = latent_soo_by_layer(model, tokenizer, records, layers=[1, 3], batch_size=4, progress=False)
    assert set(by_layer) == {1, 3} and by_layer[1]["soo_loss_n"] == 6
    # Independent computation of layer 3 with the training collator in one batch.
    capture = ActivationCapture(model, [3])
    dataset = SOOPairDataset(records, tokenizer)
    batch = SOOPairCollator(tokenizer.pad_token_id, "full")([dataset[i] for i in range(6)])
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    expected = soo_distance_per_pair(capture.outputs[3], batch, "full").mean().item()
    assert by_layer[3]["soo_loss"] == pytest.approx(expected, rel=1e-4)


def test_seeds_of_one_recipe_aggregate_and_a_control_recipe_stays_apart(tiny_model_dir, data_files, tmp_path, capsys):
    seed0 = _train(tiny_model_dir, data_files, tmp_path / "soo-seed0", "--seed", "0")
    seed1 = _train(tiny_model_dir, data_files, tmp_path / "soo-seed1", "--seed", "1")
    lm_only = _train(tiny_model_dir, data_files, tmp_path / "lm-only", "--seed", "0", "--soo_weight", "0")
    out = tmp_path / "eval"
    code, _, stderr = _evaluate(
        [
            "--adapters",
            str(seed0),
            str(seed1),
            str(lm_only),
            "--scenarios",
            "main",
            "--n",
            "2",
            "--max_new_tokens",
            "3",
            "--no_capability",
            "--output_dir",
            str(out),
        ],
        capsys,
    )
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    assert [(c["group"], c.get("seed")) for c in results["conditions"]] == [
        ("base", None),
        ("lm1_soo1", 0),
        ("lm1_soo1", 1),
        ("lm1_soo0", 0),
    ]
    across = {(e["group"], e["order"]): e for e in results["rates_across_seeds"]}
    pooled = {e["condition"]: e["rate"] for e in results["rates"] if e["order"] == "both"}
    assert across[("lm1_soo1", "both")]["seeds"] == 2 and across[("lm1_soo0", "both")]["seeds"] == 1
    assert across[("lm1_soo1", "both")]["mean_rate"] == pytest.approx((pooled["soo_0"] + pooled["soo_1"]) / 2)
    assert "## Across seeds" in (out / "report.md").read_text()


def test_aggregate_seeds_gives_mean_and_sample_sd():
    from soo.eval.rates import aggregate_seeds

    summary = [
        {
            "group": "soo",
            "scenario": "main",
            "order": "both",
            "measure": "deceptive",
            "rate": rate,
            "ambiguous_rate": 0.0,
        }
        for rate in (0.2, 0.4, 0.9)
    ]
    (entry,) = aggregate_seeds(summary)
    assert entry["seeds"] == 3 and entry["mean_rate"] == pytest.approx(0.5)
    assert entry["sd_rate"] == pytest.approx(0.36055512754639896)  # sample SD (n - 1) of 0.2, 0.4, 0.9


def test_group_names_ignore_seed_and_output_dir_but_not_the_loss_weights():
    from soo.eval.engine import group_names

    def run(seed, soo_weight, output_dir):
        return {
            "soo_args": {"lm_weight": 1.0, "soo_weight": soo_weight, "soo_layers": [15]},
            "training_args": {"seed": seed, "output_dir": output_dir, "learning_rate": 1e-3},
        }

    assert group_names([run(0, 1.0, "a"), run(1, 1.0, "b")]) == ["soo", "soo"]
    assert group_names([run(0, 1.0, "a"), run(0, 0.0, "b"), run(1, 1.0, "c")]) == ["lm1_soo1", "lm1_soo0", "lm1_soo1"]
    other_lr = run(0, 1.0, "d")
    other_lr["training_args"]["learning_rate"] = 1e-4
    assert group_names([run(0, 1.0, "a"), other_lr]) == ["lm1_soo1_r0", "lm1_soo1_r1"]


def test_mt_bench_style_export_writes_two_turn_answers_in_the_judge_layout(
    make_model, tokenizer, tmp_path, monkeypatch
):
    from soo.eval import capability

    questions = capability.load_mt_bench_style_questions()
    assert len(questions) >= 10 and all(len(q["turns"]) == 2 for q in questions)
    assert len({q["question_id"] for q in questions}) == len(questions)
    monkeypatch.setattr(capability, "load_mt_bench_style_questions", lambda: questions[:2])
    model = make_model("llama").eval()
    path = capability.export_mt_bench_style_answers(
        model, tokenizer, tmp_path / "a.jsonl", "base", max_new_tokens=3, progress=False
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [q["question_id"] for q in questions[:2]]
    assert all(line["model_id"] == "base" and len(line["choices"][0]["turns"]) == 2 for line in lines)
    assert all(isinstance(turn, str) for line in lines for turn in line["choices"][0]["turns"])


def test_rates_among_decided_answers_leave_ambiguous_out_of_the_denominator():
    from soo.eval.rates import summarize_labels

    labels = ["deceptive"] * 3 + ["honest"] * 1 + ["ambiguous"] * 6
    rows = [
        {
            "condition": "soo_0",
            "group": "soo",
            "scenario": "main",
            "order": "deceptive_first",
            "kind": "deception",
            "label": label,
            "response": "" if i == 9 else "x",
        }
        for i, label in enumerate(labels)
    ]
    (both, first) = summarize_labels(rows)
    assert both["order"] == "both" and first["order"] == "deceptive_first"
    assert first["n"] == 10 and first["rate"] == pytest.approx(0.3) and first["ambiguous_rate"] == pytest.approx(0.6)
    assert first["n_decided"] == 4 and first["rate_among_decided"] == pytest.approx(0.75)
    assert first["ci_low_among_decided"] < 0.75 < first["ci_high_among_decided"]
    assert first["empty_responses"] == 1
    only_ambiguous = summarize_labels([dict(rows[-1])])[0]
    assert only_ambiguous["n_decided"] == 0 and only_ambiguous["rate_among_decided"] is None
