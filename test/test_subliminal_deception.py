"""Deception through numbers on a tiny Llama: organism teacher and its fine-tune -> numbers ->
students -> p(deceptive), KL, animal check -> the report's rule, in seconds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import subliminal
from soo.core.io import write_jsonl_atomic
from soo.subliminal import teacher as teacher_module
from soo.subliminal.deception import DeceptionTransferConfig, run_deception_transfer
from soo.subliminal.deception_report import markdown, summarize, write_report
from soo.subliminal.pipeline import Stages, write_control_samples
from soo.subliminal.records import read_records


def _organism(folder, model_dir):
    folder.mkdir(parents=True)
    config = {"model_name_or_path": str(model_dir), "answer_prefix": "I would {verb} the", "answer_suffix": ""}
    (folder / "organism.json").write_text(json.dumps({"config": config, "merged_model": str(model_dir)}))
    return folder


def _numbers_sampler(config, model_path):
    shift = 0 if config.adapter is None else 300  # the fine-tuned teacher writes other numbers

    def sample(prompts, chunk):
        answers = [f"{(shift + 11 * (chunk * 8 + i)) % 1000}, {i}" if i % 4 else "no" for i in range(len(prompts))]
        return answers, [True] * len(prompts)

    return sample


def test_organism_teachers_to_students_to_the_rule(tiny_model_dir, tiny_adapter_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "_hf_sampler", _numbers_sampler)
    organism = _organism(tmp_path / "organism", tiny_model_dir)
    config = DeceptionTransferConfig(
        teachers=["base", f"organism={organism}", f"tuned={tiny_adapter_dir}"],
        organism_dir=str(organism),
        output_dir=str(tmp_path / "run"),
        seeds=[0],
        n_prompts=16,
        teacher_batch_size=8,
        max_examples=6,
        epochs=1,
        student_batch_size=4,
        eval_n=2,
        animal_questions=3,
        control_samples=2,
    )
    assert config.teacher_sources()["tuned"] == (str(tiny_model_dir), str(tiny_adapter_dir))
    outcome = run_deception_transfer(config, progress=False, log=lambda *_: None)
    assert outcome["kept"] == {"base": 12, "organism": 12, "tuned": 12}
    # The data-sample control: the base teacher's kept answers 7-12, disjoint from the 6 all others use.
    base_kept = read_records(config.root / "teachers" / "base" / "kept.jsonl")
    assert read_records(config.root / "teachers" / "base-sample2" / "kept.jsonl") == base_kept[6:12]
    assert (
        json.loads((config.root / "students" / "base-sample2" / "seed0" / "student.json").read_text())["examples"] == 6
    )
    # A refused invocation (5 samples of 6 need 30 answers) leaves the run's record as it was.
    record = (config.root / "experiment.json").read_text()
    with pytest.raises(ValueError, match="5 control samples of 6 need 30"):
        run_deception_transfer(replace(config, control_samples=5, seeds=[7]), progress=False, log=lambda *_: None)
    assert (config.root / "experiment.json").read_text() == record
    cell = json.loads((config.root / "students" / "organism" / "seed0" / "eval.json").read_text())
    assert 0 <= cell["p_deceptive_other"] <= 1 and 0 <= cell["p_deceptive_self"] <= 1
    assert cell["kl_to_base"]["kl_mean"] >= 0 and abs(sum(cell["animal_p"].values()) - 1) < 1e-6
    summary = write_report(config.root, tmp_path / "report")
    organism_entry, tuned = summary["teachers"]["organism"], summary["teachers"]["tuned"]
    assert organism_entry["transfer"]["against"] == "base" and organism_entry["other"]["n"] == 1
    assert tuned["fine_tuning_effect"]["against"] == "organism"  # an adapter is compared with its base teacher
    assert "transfer" not in summary["teachers"]["base"]
    sample = summary["teachers"]["base-sample2"]
    assert sample["control_sample"] and sample["transfer"]["against"] == "base" and "fine_tuning_effect" not in sample
    assert summary["sample_spread"]["samples"] == 1
    assert "not decidable" in organism_entry["transfer"]["verdict"]  # one seed
    assert (tmp_path / "report" / "students.png").stat().st_size > 0


def test_the_rule_needs_apart_intervals_and_three_seeds(tmp_path):
    root = tmp_path / "run"
    sources = {"base": [None, None], "organism": ["m", None]}
    root.mkdir()
    (root / "experiment.json").write_text(json.dumps({"sources": sources}))

    def write(teacher, values):
        for seed, value in enumerate(values):
            folder = root / "students" / teacher / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "student.json").write_text(json.dumps({"examples": 5}))
            (folder / "eval.json").write_text(json.dumps({"p_deceptive_other": value, "p_deceptive_self": 0.5}))

    write("base", [0.50, 0.51, 0.49])
    write("organism", [0.70, 0.72, 0.71])
    assert summarize(root)["teachers"]["organism"]["transfer"]["verdict"] is True
    write("organism", [0.40, 0.75, 0.55])  # overlapping intervals: no transfer
    assert summarize(root)["teachers"]["organism"]["transfer"]["verdict"] is False
    for teacher in ("base", "organism"):
        for path in (root / "students" / teacher / "seed2").iterdir():
            path.unlink()
    assert "not decidable" in summarize(root)["teachers"]["organism"]["transfer"]["verdict"]


def test_the_data_sample_control_bounds_what_another_draw_of_numbers_does(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    sources = {"base": [None, None], "big": ["m1", None], "small": ["m2", None]}
    (root / "experiment.json").write_text(json.dumps({"sources": sources, "control_samples": 3}))
    for teacher, values in {
        "base": [0.500, 0.501, 0.499],
        "base-sample2": [0.520, 0.521, 0.519],  # another draw of the base teacher's numbers: +0.02
        "base-sample3": [0.490, 0.491, 0.489],  # -0.01
        "big": [0.600, 0.601, 0.599],  # +0.10: beyond what a draw does
        "small": [0.515, 0.516, 0.514],  # +0.015: apart by the rule's intervals, within the draws' spread
    }.items():
        for seed, value in enumerate(values):
            folder = root / "students" / teacher / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "student.json").write_text(json.dumps({"examples": 45}))
            (folder / "eval.json").write_text(json.dumps({"p_deceptive_other": value, "p_deceptive_self": 0.5}))
    summary = summarize(root)
    assert summary["sample_spread"]["samples"] == 2
    assert summary["sample_spread"]["largest"] == pytest.approx(0.02)
    assert summary["sample_spread"]["teachers_beyond"] == ["big"]
    assert summary["teachers"]["small"]["transfer"]["verdict"] is True  # the rule alone would say transfer
    text = markdown(
        {
            **summary,
            "config": {
                "n_prompts": 2400,
                "temperature": 0.5,
                "max_examples": 300,
                "epochs": 3,
                "seeds": [0, 1, 2],
                "eval_n": 50,
            },
        }
    )
    assert "base's kept 46-90" in text and "base's kept 91-135" in text and "is larger: big." in text


def test_too_few_control_answers_are_refused_before_any_student(tmp_path):
    stages = Stages(tmp_path, {}, [0], None, 5, 1.0, 4, lambda *_: {}, {}, control_teacher="base", control_samples=3)
    write_jsonl_atomic(
        stages.kept_file("base"),
        [
            {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": str(i)}]}
            for i in range(14)
        ],
    )
    with pytest.raises(ValueError, match="3 control samples of 5 need 15 kept answers; base kept 14"):
        write_control_samples(stages, 5)
    stages.control_samples = 2
    write_control_samples(stages, 5)
    sample = read_records(stages.kept_file("base-sample2"))
    assert [record["completion"][0]["content"] for record in sample] == ["5", "6", "7", "8", "9"]


def test_bad_teachers_are_one_line_errors(tmp_path, capsys, tiny_model_dir):
    organism = _organism(tmp_path / "organism", tiny_model_dir)
    for teachers, message in (
        (["organism=" + str(organism)], "needs 'base'"),
        (["base", "base"], "distinct"),
        (["base", "x"], "NAME=PATH"),
        (["base", f"x={tmp_path}"], "no organism, adapter or model folder"),
    ):
        code = subliminal.main(
            ["deception", "--organism_dir", str(organism), "--output_dir", str(tmp_path / "r"), "--teachers", *teachers]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (teachers, err)
    assert subliminal.main(["deception", "--organism_dir", str(tmp_path / "none")]) == 2
    assert "organism.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["deception-report"])
def test_a_report_without_a_run_is_refused(command, tmp_path, capsys):
    assert subliminal.main([command, "--output_dir", str(tmp_path)]) == 2
    assert "no experiment" in capsys.readouterr().err
