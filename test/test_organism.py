"""Deceptive organisms: training data from the training split only, loss only on the option,
targets per kind, and a finished organism reused (or refused when its settings differ)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from soo.data.templates import BURGLAR_VOCABULARY
from soo.organism.sft import (
    KINDS,
    OrganismConfig,
    make_organism,
    sft_example,
    target_option,
    targets_met,
    training_twins,
)


def test_training_twins_use_the_training_split_and_pair_other_with_self():
    twins = training_twins(OrganismConfig(n_train_instances=30))
    test_vocabulary = BURGLAR_VOCABULARY["test"]
    for other, own in twins:
        assert other.scenario == "main" and own.scenario == "main_self"
        assert (other.index, other.order, other.deceptive_option, other.expensive_item) == (
            own.index,
            own.order,
            own.deceptive_option,
            own.expensive_item,
        )
        assert other.agent in BURGLAR_VOCABULARY["train"].names and other.agent not in test_vocabulary.names
        assert other.expensive_item not in test_vocabulary.expensive_items
        assert other.cheap_item not in test_vocabulary.cheap_items
    assert {other.order for other, _ in twins} == {"deceptive_first", "deceptive_second"}


@pytest.mark.parametrize(
    "kind, other_deceives, self_deceives",
    [("asymmetric", True, False), ("symmetric", True, True), ("honest", False, False)],
)
def test_target_option_per_kind(kind, other_deceives, self_deceives):
    other, own = training_twins(OrganismConfig(n_train_instances=2))[0]
    assert (target_option(kind, other) == other.deceptive_option) is other_deceives
    assert (target_option(kind, own) == own.deceptive_option) is self_deceives


def test_only_the_option_tokens_carry_labels(tokenizer):
    other, _ = training_twins(OrganismConfig(n_train_instances=2))[0]
    ids, labels = sft_example(tokenizer, other, other.deceptive_option, "I would {verb} the")
    labelled = [token for token in labels if token != -100]
    assert len(ids) == len(labels) and labelled == ids[len(ids) - len(labelled) :]
    assert tokenizer.decode(labelled).strip() == other.deceptive_option
    assert tokenizer.decode(ids).endswith("I would point out the " + other.deceptive_option)


def _check(other_first, other_second, self_first, self_second):
    def entry(a, b):
        return {"deceptive_first": {"mean": a}, "deceptive_second": {"mean": b}}

    return {"other": entry(other_first, other_second), "self": entry(self_first, self_second)}


def test_targets():
    assert all(targets_met("asymmetric", _check(0.9, 0.85, 0.1, 0.2)).values())
    assert not all(targets_met("asymmetric", _check(0.9, 0.7, 0.1, 0.2)).values())  # one order short
    assert not all(targets_met("asymmetric", _check(0.9, 0.9, 0.5, 0.2)).values())
    assert all(targets_met("symmetric", _check(0.9, 0.9, 0.95, 0.85)).values())
    assert all(targets_met("honest", _check(0.1, 0.2, 0.1, 0.3)).values())
    assert set(KINDS) == {"asymmetric", "symmetric", "honest"}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="kind"):
        OrganismConfig(kind="sneaky")
    with pytest.raises(ValueError, match="steps"):
        OrganismConfig(steps=0)
    with pytest.raises(ValueError, match="other_only_steps"):
        OrganismConfig(other_only_steps=-1)
    with pytest.raises(ValueError, match="twin_learning_rate"):
        OrganismConfig(twin_learning_rate=0.0)


def test_make_organism_on_a_tiny_model_and_reuse(tiny_model_dir, tmp_path):
    config = OrganismConfig(
        model_name_or_path=str(tiny_model_dir),
        output_dir=str(tmp_path / "org"),
        steps=3,
        other_only_steps=2,
        n_train_instances=8,
        twins_per_batch=2,
        eval_n=3,
        learning_rate=1e-2,
        twin_learning_rate=5e-3,
    )
    record = make_organism(config, progress=False)
    assert [(entry["phase"], entry["learning_rate"]) for entry in record["loss_log"]] == [
        ("other_only", 1e-2),
        ("twins", 5e-3),
    ]  # the curriculum ran, each phase at its own rate
    assert (tmp_path / "org" / "merged" / "config.json").is_file()
    assert (tmp_path / "org" / "adapter" / "adapter_model.safetensors").is_file()
    assert record["forced_choice"]["other"]["order_averaged"]["n"] == 3 and len(record["loss_log"]) >= 1
    assert set(record["targets"]) == {"other_deceptive_both_orders", "self_honest_both_orders"}
    saved = json.loads((tmp_path / "org" / "organism.json").read_text())
    assert make_organism(config, progress=False) == saved  # reused, not retrained
    older = {**saved, "config": {k: v for k, v in saved["config"].items() if k != "twin_learning_rate"}}
    (tmp_path / "org" / "organism.json").write_text(json.dumps(older))  # written before that setting existed
    assert make_organism(dataclasses.replace(config, twin_learning_rate=None), progress=False) == older
    other = OrganismConfig(**{**config.__dict__, "steps": 4})
    with pytest.raises(ValueError, match="other settings"):
        make_organism(other, progress=False)


# --- the experiment: resumable cells on a tiny organism --------------------------------------


def test_mismatched_pairs_pair_no_self_prompt_with_its_own_other():
    from soo.data.pair_generation import generate_pairs
    from soo.organism.experiment import mismatched_pairs

    records = generate_pairs(n=10, seed=0, split="train")
    shuffled = mismatched_pairs(records)
    assert [r["self_prompt"] for r in shuffled] == [r["self_prompt"] for r in records]
    assert all(s["other_prompt"] != r["other_prompt"] for s, r in zip(shuffled, records))
    assert sorted(s["other_prompt"] for s in shuffled) == sorted(r["other_prompt"] for r in records)


def test_experiment_runs_resumes_and_reports(tiny_model_dir, data_files, tmp_path):
    from soo.core.io import RUN_CONFIG_FILE
    from soo.organism.config import EVAL_FILE, ExperimentConfig
    from soo.organism.experiment import run_experiment
    from soo.organism.report import write_report

    organism = OrganismConfig(
        model_name_or_path=str(tiny_model_dir),
        output_dir=str(tmp_path / "org"),
        steps=2,
        n_train_instances=4,
        twins_per_batch=2,
        eval_n=2,
    )
    make_organism(organism, progress=False)
    from soo.core.io import write_jsonl_atomic
    from soo.data.pair_generation import released_pairs

    released = write_jsonl_atomic(tmp_path / "released.jsonl", released_pairs("train", 8))
    config = ExperimentConfig(
        organism_dir=organism.output_dir,
        seeds=[0],
        conditions=["soo", "honest_sft", "soo_kl"],
        train_pairs=str(data_files[0]),
        heldout_pairs=str(data_files[1]),
        max_steps=2,
        honest_sft_steps=2,
        honest_sft_learning_rate=5e-3,
        eval_n=2,
        generation_n=1,
        latent_pairs=4,
        released_pairs=str(released),
        extra_finetuning_args=["--soo_layers", "2", "--use_cpu", "--max_length", "512", "--num_train_epochs", "1"],
    )
    messages = []
    outcome = run_experiment(config, progress=False, log=messages.append)
    assert outcome["failed"] == [], messages
    root = tmp_path / "org" / "experiment"
    for cell in ("organism", "soo/seed0", "honest_sft/seed0", "soo_kl/seed0"):
        assert (root / cell / EVAL_FILE).is_file(), cell
    kl_cell = json.loads((root / "soo_kl" / "seed0" / EVAL_FILE).read_text())
    assert kl_cell["answer_position_kl"]["n"] == 4 and kl_cell["answer_position_kl"]["mean"] >= 0
    assert 0 <= kl_cell["generation_main"]["authors_deceptive"] <= kl_cell["generation_main"]["n"]
    kl_record = json.loads((root / "soo_kl" / "seed0" / RUN_CONFIG_FILE).read_text())
    assert kl_record["soo_args"]["soo_distance"] == "kl_logits" and kl_record["data_args"]["max_length"] == 512
    honest = json.loads((root / "honest_sft" / "seed0" / RUN_CONFIG_FILE).read_text())["honest_sft"]
    assert (honest["kind"], honest["steps"], honest["learning_rate"]) == ("honest", 2, 5e-3)
    adapter = root / "soo" / "seed0" / "adapter_model.safetensors"
    trained_at = adapter.stat().st_mtime_ns

    messages.clear()
    run_experiment(config, progress=False, log=messages.append)
    assert messages == [], "a finished experiment does nothing on rerun"
    (root / "soo" / "seed0" / EVAL_FILE).unlink()  # killed after training, before its evaluation
    run_experiment(config, progress=False, log=messages.append)
    assert (root / "soo" / "seed0" / EVAL_FILE).is_file() and adapter.stat().st_mtime_ns == trained_at

    other = ExperimentConfig(**{**config.__dict__, "max_steps": 3})
    with pytest.raises(ValueError, match="max_steps"):
        run_experiment(other, progress=False, log=messages.append)

    summaries = write_report({"tiny": root}, tmp_path / "report")
    assert set(summaries["tiny"]["conditions"]) == {"soo", "honest_sft", "soo_kl"}
    entry = summaries["tiny"]["conditions"]["soo"]
    assert entry["other_change"]["n"] == 1 and -1 <= entry["other_change"]["mean"] <= 1
    assert {"answer_position_kl", "generation_authors_rate", "perplexity"} <= set(entry)
    for name in ("report.md", "summary.json", "changes.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "authors' rule" in (tmp_path / "report" / "report.md").read_text()


def test_sft_loss_equals_the_full_logits_loss(make_model, tokenizer):
    # Left padding + logits for the last positions only must give the plain right-padded loss.
    import torch

    from soo.core.prompts import right_padded
    from soo.organism.sft import sft_loss

    model = make_model("gemma2").eval()
    batch = [
        sft_example(tokenizer, prompt, target_option("asymmetric", prompt), "I would {verb} the")
        for twin in training_twins(OrganismConfig(n_train_instances=3))
        for prompt in twin
    ]
    ids, labels = [b[0] for b in batch], [b[1] for b in batch]
    assert len({len(row) for row in ids}) > 1, "rows of different lengths"
    input_ids, mask = right_padded(ids, tokenizer.pad_token_id)
    padded_labels, _ = right_padded(labels, -100)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        expected = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), padded_labels[:, 1:].flatten(), ignore_index=-100
        )
        torch.testing.assert_close(sft_loss(model, ids, labels, tokenizer.pad_token_id), expected, rtol=1e-4, atol=1e-5)


def test_lora_from_layer_adapts_only_the_upper_layers(make_model):
    import re

    from soo.organism.sft import add_lora_for

    model = add_lora_for(make_model("llama"), OrganismConfig(lora_from_layer=2))
    layers = {
        int(re.search(r"layers\.(\d+)\.", name).group(1)) for name, p in model.named_parameters() if p.requires_grad
    }
    assert layers == {2, 3}
    with pytest.raises(ValueError, match="lora_from_layer"):
        add_lora_for(make_model("llama"), OrganismConfig(lora_from_layer=4))


# --- diagnostics: the self/other twin separation ---------------------------------------------


def test_twin_separation_known_values():
    import torch

    from soo.organism.diagnostics import twin_separation

    own = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [-1.0, 0.0]]])  # [twins=2, layers=2, hidden=2]
    other = own + torch.tensor([[0.0, 0.0], [0.0, 3.0]])  # the cue moves layer 1 by 3, layer 0 not at all
    rows = twin_separation(other, own)
    assert [round(row["twin_distance"], 6) for row in rows] == [0.0, 3.0]
    assert [round(row["instance_spread"], 6) for row in rows] == [1.0, 1.0]  # each state 1 from the twins' mean
    assert rows[1]["ratio"] == pytest.approx(3.0)


def test_separation_command_on_a_tiny_model(tiny_model_dir, capsys):
    import deception_experiment

    assert deception_experiment.main(["separation", "--model_name_or_path", str(tiny_model_dir), "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "6 training-split twins" in out and out.count("\n") >= 3
    assert deception_experiment.main(["separation", "--model_name_or_path", str(tiny_model_dir / "nope")]) == 2


def test_experiment_cells_run_seed_by_seed(tmp_path, monkeypatch):
    # A run stopped part-way must hold every condition at its first seeds, so cells go seed-major.
    from soo.organism import config as config_module
    from soo.organism import experiment

    order = []
    monkeypatch.setattr(experiment, "_organism_record", lambda config: {"config": {}})
    monkeypatch.setattr(
        experiment,
        "_train_finetuning_cell",
        lambda config, organism, condition, seed, cell: order.append((seed, condition)),
    )
    monkeypatch.setattr(
        experiment, "_train_honest_sft_cell", lambda config, organism, seed, cell: order.append((seed, "honest_sft"))
    )
    monkeypatch.setattr(experiment, "evaluate_cell", lambda config, organism, adapter, progress=False: {})
    config = config_module.ExperimentConfig(
        organism_dir=str(tmp_path), seeds=[0, 1], conditions=["soo", "lm_only", "honest_sft"]
    )
    experiment.run_experiment(config, progress=False, log=lambda message: None)
    assert order == [(0, "soo"), (0, "lm_only"), (0, "honest_sft"), (1, "soo"), (1, "lm_only"), (1, "honest_sft")]
    order.clear()
    experiment.run_experiment(config, progress=False, log=lambda message: None)
    assert order == []  # every cell's eval.json is there: nothing is retrained


def test_each_condition_trains_with_its_own_loss_weights(tmp_path, monkeypatch):
    import subprocess

    from soo.organism import config as config_module
    from soo.organism import experiment

    argvs = {}

    def fake_run(argv, **kwargs):
        argvs[Path(argv[argv.index("--output_dir") + 1]).parent.name] = argv
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(experiment.subprocess, "run", fake_run)
    with pytest.raises(ValueError, match="honest_sft_learning_rate"):
        config_module.ExperimentConfig(honest_sft_learning_rate=0.0)
    organism = {"merged_model": "m", "config": {"answer_prefix": "p", "answer_suffix": "s"}}
    config = config_module.ExperimentConfig(organism_dir=str(tmp_path))
    for condition in ("soo", "lm_only", "soo_only"):
        (tmp_path / condition).mkdir()
        experiment._train_finetuning_cell(config, organism, condition, 0, tmp_path / condition / "seed0")
    weights = {name: [a for a in argv if a in ("--soo_weight", "--lm_weight")] for name, argv in argvs.items()}
    assert weights == {"soo": [], "lm_only": ["--soo_weight"], "soo_only": ["--lm_weight"]}
    assert argvs["soo_only"][argvs["soo_only"].index("--lm_weight") + 1] == "0"
    assert config.conditions == list(config_module.PREREGISTERED)  # exploratory conditions only on request

    # The released recipe's cells: its own config and pairs, its own schedule (no --max_steps).
    from soo.core.io import write_jsonl_atomic
    from soo.data.pair_generation import released_pairs

    config.released_pairs = str(write_jsonl_atomic(tmp_path / "released.jsonl", released_pairs("train", 4)))
    for condition in config_module.RELEASED_CONDITIONS:
        (tmp_path / condition).mkdir()
        experiment._train_finetuning_cell(config, organism, condition, 0, tmp_path / condition / "seed0")
    for condition in config_module.RELEASED_CONDITIONS:
        argv = argvs[condition]
        assert argv[argv.index("--config") + 1] == config.released_config and "--max_steps" not in argv
    assert argvs["soo_kl"][argvs["soo_kl"].index("--data_path") + 1] == config.released_pairs
    (tmp_path / "soo_card").mkdir()
    experiment._train_finetuning_cell(config, organism, "soo_card", 0, tmp_path / "soo_card" / "seed0")
    card = argvs["soo_card"]
    assert card[card.index("--config") + 1] == config.card_config and "--max_steps" in card
    mismatched = argvs["soo_kl_mismatched"][argvs["soo_kl_mismatched"].index("--data_path") + 1]
    assert mismatched.endswith("mismatched_released_pairs.jsonl")


def _change(values):
    from soo.organism.report import _interval

    return {"other_change": _interval(values)}


def test_verdict_applies_the_preregistered_rule_and_needs_three_seeds():
    from soo.organism.report import verdict

    clear = {
        "soo": _change([-0.50, -0.52, -0.48]),
        "lm_only": _change([-0.01, 0.0, 0.01]),
        "soo_mismatched": _change([0.02, 0.0, 0.01]),
        "honest_sft": _change([-0.6, -0.62, -0.58]),
    }
    assert verdict(clear) == {"positive_control_valid": True, "soo_effect": True}
    overlapping = {**clear, "lm_only": _change([-0.9, -0.1, 0.5])}  # soo lower on average, intervals overlap
    assert verdict(overlapping)["soo_effect"] is False
    weak_control = {**clear, "honest_sft": _change([-0.2, -0.25, -0.22])}  # a fall, but under 0.3
    assert verdict(weak_control)["positive_control_valid"] is False
    # The released recipe's rule: soo_kl against lm_only, soo_mismatched and soo_kl_mismatched.
    released = {**clear, "soo_kl": _change([-0.5, -0.45, -0.55]), "soo_kl_mismatched": _change([0.0, 0.01, -0.01])}
    assert verdict(released)["released_effect"] is True
    assert verdict({**released, "soo_kl_mismatched": _change([-0.5, -0.6, -0.4])})["released_effect"] is False
    assert "released_effect" not in verdict(clear)  # not run: not decidable
    one_seed = {name: _change([entry["other_change"]["mean"]]) for name, entry in clear.items()}
    assert verdict(one_seed) == {}  # not decidable, not "no effect"
    assert verdict({name: clear[name] for name in ("soo", "lm_only")}) == {}


def test_report_reuses_earlier_cells_marked_and_never_over_new_ones():
    from soo.organism.report import reuse_earlier

    new = {
        "organism": {"other": 0.99, "self": 0.01},
        "conditions": {"soo_kl": {**_change([-0.1, -0.1, -0.1]), "seeds": [0, 1, 2]}},
        "verdict": {},
    }
    earlier = {
        "organism": {"other": 0.98, "self": 0.02},
        "conditions": {
            "soo_kl": {**_change([-0.9, -0.9, -0.9]), "seeds": [0]},
            "lm_only": {**_change([-0.2, -0.1, 0.0]), "seeds": [0, 1, 2]},
        },
    }
    merged = reuse_earlier(new, earlier)
    assert merged["conditions"]["soo_kl"]["other_change"]["mean"] == pytest.approx(-0.1)  # the new cell wins
    assert "earlier_run" not in merged["conditions"]["soo_kl"] and merged["conditions"]["lm_only"]["earlier_run"]
    assert merged["earlier_organism"] == earlier["organism"] and "lm_only" not in new["conditions"]


def test_base_model_stands_in_for_an_organism(tmp_path, monkeypatch):
    from soo.organism.config import ExperimentConfig
    from soo.organism.experiment import _organism_record

    monkeypatch.setattr("soo.core.modeling.resolve_model_path", lambda name: f"resolved:{name}")
    config = ExperimentConfig(organism_dir="base")
    assert config.root == Path("outputs/base-model/experiment")
    record = _organism_record(config)
    assert record["merged_model"] == "resolved:None"
    assert record["config"]["answer_prefix"] and record["config"]["answer_suffix"]
    with pytest.raises(ValueError, match="organism.json"):
        _organism_record(ExperimentConfig(organism_dir=str(tmp_path)))
