"""The subliminal-learning mechanism control (soo.subliminal.digits) on tiny settings: the effect
itself, that the students see nothing but noise and the teacher's logits of it, determinism, bad
settings, and the files a run writes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from soo.subliminal import digits
from soo.subliminal.digits import (
    DIGIT_CLASSES,
    PIXEL_RANGE,
    MechanismConfig,
    format_mechanism,
    load_digit_split,
    run_mechanism,
    run_seed,
    verdict,
)

# Small enough for a fraction of a second per seed, large enough for the effect (measured on seeds
# 0-5: the same-init student beat the different-init one by 0.11-0.33 on every seed).
SMALL = dict(hidden=128, student_steps=100, student_batch_size=256, student_learning_rate=1e-3)
TINY = dict(hidden=16, teacher_epochs=1, student_steps=5, student_batch_size=32)


@pytest.fixture(scope="module")
def data():
    return load_digit_split(0.3, 0)


def test_the_split_is_stratified_and_scaled(data):
    assert len(data.train_labels) + len(data.test_labels) == 1797
    assert data.train_images.shape[1] == 64
    assert data.train_images.min() == PIXEL_RANGE[0] and data.train_images.max() == PIXEL_RANGE[1]
    test_shares = torch.bincount(data.test_labels, minlength=DIGIT_CLASSES) / len(data.test_labels)
    all_labels = torch.cat([data.train_labels, data.test_labels])
    all_shares = torch.bincount(all_labels, minlength=DIGIT_CLASSES) / len(all_labels)
    assert (test_shares - all_shares).abs().max() < 0.005  # stratified
    assert test_shares.max() < 0.105  # chance: no constant guess scores more than about 0.10


def test_the_same_init_student_beats_the_different_init_one(data, tmp_path):
    summary = run_mechanism(MechanismConfig(seeds=[0, 1], output_dir=str(tmp_path), **SMALL), progress=False)
    arms = summary["arms"]
    assert arms["teacher"]["mean"] > 0.85
    assert arms["same_init_student"]["mean"] - arms["different_init_student"]["mean"] > 0.1
    assert arms["different_init_student"]["mean"] < 0.2


def test_the_students_see_only_noise_and_the_teachers_logits_of_it(data, monkeypatch):
    drawn, calls = [], []
    real_noise, real_distill = digits.uniform_noise, digits.distill_on_noise

    def recording_noise(count, generator):
        drawn.append(real_noise(count, generator))
        return drawn[-1]

    def spying_distill(student, teacher_targets, student_logits, config, generator):
        call = {"student_inputs": [], "target_inputs": [], "target_widths": set(), "logits": student_logits}
        calls.append(call)
        hook = student.register_forward_pre_hook(lambda module, args: call["student_inputs"].append(args[0]))

        def recorded_targets(noise):
            call["target_inputs"].append(noise)
            targets = teacher_targets(noise)
            call["target_widths"].add(targets.shape[1])
            return targets

        try:
            return real_distill(student, recorded_targets, student_logits, config, generator)
        finally:
            hook.remove()

    monkeypatch.setattr(digits, "uniform_noise", recording_noise)
    monkeypatch.setattr(digits, "distill_on_noise", spying_distill)
    config = MechanismConfig(seeds=[0], aux_logits=4, **TINY)
    run_seed(0, config, data)

    assert len(calls) == 2  # the same-init and the different-init student
    digit_images = torch.cat([data.train_images, data.test_images])
    for call in calls:
        assert call["logits"] == slice(DIGIT_CLASSES, DIGIT_CLASSES + 4)  # the student is scored on aux logits only
        assert call["target_widths"] == {4}  # the teacher's auxiliary logits, never its digit logits
        assert len(call["student_inputs"]) == len(call["target_inputs"]) == config.student_steps
        for student_input, target_input in zip(call["student_inputs"], call["target_inputs"]):
            assert any(student_input is noise for noise in drawn) and target_input is student_input
            assert torch.cdist(student_input, digit_images).min() > 0
    first_batches = [call["student_inputs"][0] for call in calls]
    assert torch.equal(first_batches[0], first_batches[1])  # paired: both students get the same noise
    assert not torch.equal(calls[0]["student_inputs"][0], calls[0]["student_inputs"][1])  # fresh each step


def test_the_optional_arm_matches_the_digit_logits(data, monkeypatch):
    matched = []
    real_distill = digits.distill_on_noise

    def spying_distill(student, teacher_targets, student_logits, config, generator):
        matched.append(student_logits)
        return real_distill(student, teacher_targets, student_logits, config, generator)

    monkeypatch.setattr(digits, "distill_on_noise", spying_distill)
    record = run_seed(0, MechanismConfig(seeds=[0], digit_logit_arm=True, **TINY), data)
    assert slice(0, DIGIT_CLASSES) in matched and "digit_logit_student" in record["accuracy"]


def test_a_seed_gives_the_same_result_twice_and_another_seed_another(data):
    config = MechanismConfig(seeds=[0], **TINY)
    first, again, other = run_seed(3, config, data), run_seed(3, config, data), run_seed(4, config, data)
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"seeds": []}, "seed"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"aux_logits": 0}, "aux_logits"),
        ({"hidden": -1}, "hidden"),
        ({"teacher_epochs": 0}, "teacher_epochs"),
        ({"student_steps": 0}, "student_steps"),
        ({"student_batch_size": -4}, "student_batch_size"),
        ({"student_learning_rate": 0.0}, "student_learning_rate"),
        ({"temperature": float("nan")}, "temperature"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_bad_settings_raise_one_line_value_errors(overrides, name):
    with pytest.raises(ValueError, match=name) as raised:
        MechanismConfig(**overrides)
    assert "\n" not in str(raised.value)


def stats(mean, half_width):
    return {"mean": mean, "half_width": half_width, "lower": mean - half_width, "upper": mean + half_width}


def test_the_verdict_follows_the_written_rule():
    reproduced = verdict(
        {"same_init_student": stats(0.45, 0.1), "different_init_student": stats(0.12, 0.05)}, stats(0.33, 0.1)
    )
    assert reproduced == {"transfer": True, "control_at_chance": True, "same_above_control": True, "reproduced": True}
    weak = verdict({"same_init_student": stats(0.2, 0.1), "different_init_student": stats(0.2, 0.05)}, stats(0.0, 0.1))
    assert weak == {"transfer": False, "control_at_chance": False, "same_above_control": False, "reproduced": False}
    one_seed = verdict(
        {"same_init_student": stats(0.5, math.nan), "different_init_student": stats(0.1, math.nan)},
        stats(0.4, math.nan),
    )
    assert one_seed["reproduced"] is None


def test_a_run_writes_its_summary_and_plot(tmp_path):
    config = MechanismConfig(seeds=[0, 1], output_dir=str(tmp_path / "mechanism"), **TINY)
    summary = run_mechanism(config, progress=False)
    written = json.loads((tmp_path / "mechanism" / "summary.json").read_text())
    assert written["arms"].keys() == {"initial", "teacher", "same_init_student", "different_init_student"}
    assert written["arms"]["teacher"]["per_seed"] == summary["arms"]["teacher"]["per_seed"]
    assert len(written["seeds"]) == 2 and written["config"]["hidden"] == 16
    assert (tmp_path / "mechanism" / "mechanism.png").stat().st_size > 0
    table = format_mechanism(summary)
    assert "student, same init" in table and "same-init student above chance: " in table
