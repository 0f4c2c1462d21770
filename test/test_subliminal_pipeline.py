"""Subliminal learning on a tiny Llama: the teacher's resumable sampling, the student's
completion-only loss, the whole chain teacher -> filter -> students -> trait -> report, and the
CLI's one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import subliminal
from soo.eval.generation import DecodingConfig, generate_batched
from soo.subliminal import teacher as teacher_module
from soo.subliminal.experiment import SubliminalExperimentConfig, run_subliminal
from soo.subliminal.records import make_record, read_records
from soo.subliminal.report import summarize, write_report
from soo.subliminal.student import StudentConfig, build_trainer
from soo.subliminal.teacher import TeacherConfig, generate_numbers


def _answers(path) -> list[str]:
    return [record["completion"][0]["content"] for record in read_records(path)]


def test_sampling_is_seeded_and_greedy_keys_are_unchanged(make_model, tokenizer):
    model = make_model("llama")
    sampled = DecodingConfig(max_new_tokens=6, batch_size=4, temperature=1.0)
    prompts = ["Name an animal.", "Count to three.", "Say hello.", "Pick a number."]
    torch.manual_seed(0)
    first = generate_batched(model, tokenizer, prompts, sampled, progress=False)
    torch.manual_seed(0)
    assert generate_batched(model, tokenizer, prompts, sampled, progress=False) == first
    torch.manual_seed(1)
    assert generate_batched(model, tokenizer, prompts, sampled, progress=False) != first
    torch.manual_seed(0)
    texts, ended = generate_batched(model, tokenizer, prompts, sampled, progress=False, return_ended=True)
    assert texts == first and len(ended) == 4
    assert DecodingConfig().key_fields()["decoding"] == "greedy"  # old caches still match
    assert sampled.key_fields()["decoding"] == "sampled T=1"
    with pytest.raises(ValueError, match="temperature"):
        DecodingConfig(temperature=-1)


def test_generation_resumes_to_the_answers_of_an_uninterrupted_run(tiny_model_dir, tmp_path):
    settings = {"model_name_or_path": str(tiny_model_dir), "animal": "owl", "max_new_tokens": 5, "batch_size": 3}
    whole = TeacherConfig(output_file=str(tmp_path / "whole.jsonl"), n_prompts=7, **settings)
    generate_numbers(whole, progress=False)
    parts = tmp_path / "parts.jsonl"
    generate_numbers(TeacherConfig(output_file=str(parts), n_prompts=3, **settings), progress=False)
    with open(parts, "a") as handle:  # a killed run: half a chunk and a torn line
        handle.write(json.dumps(make_record(3, "p", "1")) + "\n" + '{"index": 4, "pro')
    generate_numbers(TeacherConfig(output_file=str(parts), n_prompts=7, **settings), progress=False)
    assert [r["index"] for r in read_records(parts)] == list(range(7))
    assert _answers(parts) == _answers(whole.output_file)
    assert read_records(parts)[0]["prompt"][0]["content"].count("numbers") >= 1
    assert "owl" not in json.dumps(read_records(parts)[0]["prompt"])  # the system prompt stays out
    # A random tiny model rarely stops within 5 tokens: those answers are marked as cut.
    flags = [record["truncated"] for record in read_records(parts)]
    assert any(flags) and all(isinstance(flag, bool) for flag in flags)
    with pytest.raises(ValueError, match="other settings .*temperature"):
        generate_numbers(TeacherConfig(output_file=str(parts), n_prompts=9, **{**settings, "temperature": 0.5}))


def test_a_torn_last_line_after_whole_chunks_is_dropped_before_appending(tiny_model_dir, tmp_path):
    settings = {"model_name_or_path": str(tiny_model_dir), "max_new_tokens": 3, "batch_size": 2}
    whole = TeacherConfig(output_file=str(tmp_path / "whole.jsonl"), n_prompts=4, **settings)
    generate_numbers(whole, progress=False)
    parts = tmp_path / "parts.jsonl"
    generate_numbers(TeacherConfig(output_file=str(parts), n_prompts=2, **settings), progress=False)
    with open(parts, "a") as handle:  # killed mid-write of the next chunk's first line
        handle.write('{"index": 2, "pro')
    generate_numbers(TeacherConfig(output_file=str(parts), n_prompts=4, **settings), progress=False)
    assert _answers(parts) == _answers(whole.output_file)  # every line parses: nothing ran into the torn one


def test_an_adapter_of_another_base_is_refused_before_generation(tiny_model_dir, tiny_adapter_dir, tmp_path):
    other = tmp_path / "other-base"
    other.mkdir()
    code = subliminal.main(
        ["generate", "--output_file", str(tmp_path / "r.jsonl"), "--model_name_or_path", str(other)]
        + ["--adapter", str(tiny_adapter_dir), "--no_progress"]
    )
    assert code == 2 and not (tmp_path / "r.jsonl").exists()


def test_the_student_loss_covers_the_completion_only(tiny_model_dir, tmp_path):
    records = [make_record(i, f"Continue {i}, {i + 1}.", f"{i + 2}, {i + 3}") for i in range(4)]
    config = StudentConfig(train_file="unused", output_dir=str(tmp_path / "s"), model_name_or_path=str(tiny_model_dir))
    trainer, _ = build_trainer(config, records)
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    text = tokenizer.decode(labels[labels != -100].tolist(), skip_special_tokens=True)
    assert text.strip() == "2, 3" and "Continue" not in text
    assert 0 < int((labels != -100).sum()) < batch["input_ids"].shape[1]


def _numbers_only_sampler(config, model_path):
    """A stand-in teacher for the chain test: tiny random models do not write numbers. The trait
    teacher answers with other numbers than the control, so the students' data differ."""
    offset = 0 if config.animal is None else 500

    def sample(prompts, chunk):
        answers = [f"{(offset + 7 * (chunk * 10 + i)) % 1000}, {i}" if i % 3 else "words" for i in range(len(prompts))]
        return answers, [True] * len(prompts)

    return sample


def test_the_whole_chain_runs_resumes_and_reports(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "_hf_sampler", _numbers_only_sampler)
    config = SubliminalExperimentConfig(
        output_dir=str(tmp_path / "run"),
        model_name_or_path=str(tiny_model_dir),
        animals=["owl"],
        seeds=[0, 1, 2],
        n_prompts=12,
        teacher_batch_size=4,
        epochs=1,
        student_batch_size=4,
        samples_per_question=2,
        n_questions=2,
    )
    outcome = run_subliminal(config, progress=False, log=lambda *_: None)
    assert outcome["kept"] == {"control": 6, "owl": 6} and outcome["examples"] == 6
    root = config.root
    assert len(read_records(root / "teachers" / "owl" / "kept.rejected.jsonl")) == 6
    students = sorted(path.parent.relative_to(root).as_posix() for path in root.glob("students/*/seed*/eval.json"))
    assert students == [f"students/{t}/seed{s}" for t in ("control", "owl") for s in (0, 1, 2)]
    stamps = {path: path.stat().st_mtime_ns for path in root.rglob("eval.json")}
    run_subliminal(config, progress=False, log=lambda *_: None)  # everything reused
    assert {path: path.stat().st_mtime_ns for path in root.rglob("eval.json")} == stamps
    with pytest.raises(ValueError, match="evaluated with other settings"):  # no silent mix of settings
        run_subliminal(dataclasses.replace(config, samples_per_question=3), progress=False, log=lambda *_: None)
    summary = write_report(root, tmp_path / "report")
    owl = summary["animals"]["owl"]
    assert owl["paired_difference"]["rate"]["seeds"] == [0, 1, 2]
    assert isinstance(owl["transfer"]["p_forced_choice"], bool)
    assert (tmp_path / "report" / "trait.png").stat().st_size > 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "owl-teacher students" in text and "| teacher | keep rate | kept | invalid format |" in text


def test_the_report_applies_the_rule(tmp_path):
    """Synthetic evaluations: a clear paired rise is transfer, a mixed one is not, 2 seeds undecided."""
    root = tmp_path / "run"
    (root / "students").mkdir(parents=True)
    (root / "experiment.json").write_text(json.dumps({"animals": ["owl"], "n_prompts": 1}))

    def write(teacher, seed, rate):
        folder = root / "students" / teacher / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "student.json").write_text(json.dumps({"examples": 5, "train_seconds": 1.0}))
        entry = {"rate": rate, "p_forced_choice": rate}
        (folder / "eval.json").write_text(json.dumps({"animals": {"owl": entry}}))

    for seed, (control, owl) in enumerate([(0.01, 0.05), (0.02, 0.06), (0.01, 0.04)]):
        write("control", seed, control)
        write("owl", seed, owl)
    assert summarize(root)["animals"]["owl"]["transfer"]["rate"] is True
    for seed, owl in enumerate([0.00, 0.09, 0.01]):
        (root / "students" / "owl" / f"seed{seed}" / "eval.json").write_text(
            json.dumps({"animals": {"owl": {"rate": owl, "p_forced_choice": owl}}})
        )
    assert summarize(root)["animals"]["owl"]["transfer"]["rate"] is False
    for teacher in ("control", "owl"):
        for path in (root / "students" / teacher / "seed2").iterdir():
            path.unlink()
        (root / "students" / teacher / "seed2").rmdir()
    assert "not decidable" in summarize(root)["animals"]["owl"]["transfer"]["rate"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    raw = tmp_path / "raw.jsonl"
    assert subliminal.main(["filter", "--input_file", str(raw), "--output_file", str(tmp_path / "k.jsonl")]) == 2
    assert "no such file" in _one_error_line(capsys)
    raw.write_text(json.dumps({"prompt": [{"role": "user", "content": "p"}]}) + "\n")
    assert subliminal.main(["filter", "--input_file", str(raw), "--output_file", str(tmp_path / "k.jsonl")]) == 2
    assert "'prompt' and 'completion'" in _one_error_line(capsys)
    raw.write_text(json.dumps(make_record(0, "p", "no numbers here")) + "\n")
    assert subliminal.main(["filter", "--input_file", str(raw), "--output_file", str(tmp_path / "k.jsonl")]) == 2
    assert "kept nothing" in _one_error_line(capsys) and not (tmp_path / "k.jsonl").exists()
    assert (
        subliminal.main(["train", "--train_file", str(raw), "--output_dir", str(tmp_path / "s"), "--lora_r", "0"]) == 2
    )
    assert "lora_r" in _one_error_line(capsys)
    assert subliminal.main(["generate", "--output_file", str(raw), "--n_prompts", "0"]) == 2
    assert "n_prompts" in _one_error_line(capsys)
    assert subliminal.main(["generate", "--output_file", str(raw), "--n_prompts", "3"]) == 2  # not a teacher's file
    assert "teacher.json" in _one_error_line(capsys)
    assert subliminal.main(["evaluate", "--animals", "unicorn"]) == 2
    assert "unicorn" in _one_error_line(capsys)
    assert subliminal.main(["run", "--seeds", "1", "1"]) == 2
    assert "distinct" in _one_error_line(capsys)
    assert subliminal.main(["report", "--output_dir", str(tmp_path / "none")]) == 2
    assert "no experiment" in _one_error_line(capsys)
    assert raw.read_text().count("no numbers here") == 1  # the input is untouched


def test_a_response_counts_as_ended_only_at_an_eos(tokenizer):
    from soo.eval import generation

    eos = tokenizer.eos_token_id
    texts, ended = generation._decode_new_tokens(tokenizer, torch.tensor([[50, 60, eos, 0], [50, 60, 70, 80]]), {eos})
    assert ended == [True, False] and len(texts[1]) > len(texts[0])
