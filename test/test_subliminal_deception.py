"""Deception through numbers on a tiny Llama: organism teacher and its fine-tune -> numbers ->
students -> p(deceptive), KL, animal check -> the report's rule, in seconds."""

from __future__ import annotations

import json

import pytest

import subliminal
from soo.subliminal import teacher as teacher_module
from soo.subliminal.deception import DeceptionTransferConfig, run_deception_transfer
from soo.subliminal.deception_report import summarize, write_report


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
        n_prompts=8,
        teacher_batch_size=4,
        max_examples=6,
        epochs=1,
        student_batch_size=4,
        eval_n=2,
        animal_questions=3,
    )
    assert config.teacher_sources()["tuned"] == (str(tiny_model_dir), str(tiny_adapter_dir))
    outcome = run_deception_transfer(config, progress=False, log=lambda *_: None)
    assert outcome["kept"] == {"base": 6, "organism": 6, "tuned": 6}
    cell = json.loads((config.root / "students" / "organism" / "seed0" / "eval.json").read_text())
    assert 0 <= cell["p_deceptive_other"] <= 1 and 0 <= cell["p_deceptive_self"] <= 1
    assert cell["kl_to_base"]["kl_mean"] >= 0 and abs(sum(cell["animal_p"].values()) - 1) < 1e-6
    summary = write_report(config.root, tmp_path / "report")
    organism_entry, tuned = summary["teachers"]["organism"], summary["teachers"]["tuned"]
    assert organism_entry["transfer"]["against"] == "base" and organism_entry["other"]["n"] == 1
    assert tuned["fine_tuning_effect"]["against"] == "organism"  # an adapter is compared with its base teacher
    assert "transfer" not in summary["teachers"]["base"]
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
