"""The deception scenarios as an Inspect task (soo/eval/inspect_task.py, inspect_deception.py).

With Inspect's mock model the answers are chosen per prompt, so labels and metrics are known and
are checked against evaluate.py's own classifier and summarize_labels; a tiny random Gemma-2 runs
the task end to end through Inspect's Hugging Face provider, offline. Skipped without inspect-ai
(requirements-eval.txt).
"""

from __future__ import annotations

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval  # noqa: E402
from inspect_ai.model import ModelOutput, ModelUsage  # noqa: E402

from soo.eval.inspect_task import answer_suffix, deception_task, score_label  # noqa: E402
from soo.eval.rates import label_response, summarize_labels  # noqa: E402
from soo.eval.scenarios import build_eval_prompts  # noqa: E402


def scripted_answer(prompt) -> str:
    """Deceptive for deceptive-first twins, honest for the others, no room at all for index 1."""
    if prompt.index == 1:
        return "I am not sure."
    room = prompt.deceptive_option if prompt.order == "deceptive_first" else prompt.honest_option
    return f"I would point out the {room}."


def test_labels_and_rates_match_evaluate_py_on_the_same_answers(tmp_path, capsys):
    scenarios, n = ["main", "perspectives"], 3
    prompts = build_eval_prompts(scenarios, n=n, seed=0, answer_suffix=answer_suffix(None))
    by_text = {prompt.prompt: prompt for prompt in prompts}

    def respond(messages, tools, tool_choice, config):
        output = ModelOutput.from_content(model="mockllm", content=scripted_answer(by_text[messages[-1].text]))
        # Given usage, the mock does not count tokens with tiktoken (which downloads its tables).
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return output

    (log,) = inspect_eval(
        deception_task(scenarios="main,perspectives", n=n),
        model="mockllm/model",
        model_args={"custom_outputs": respond},
        log_dir=str(tmp_path),
        display="none",
    )
    assert log.status == "success", log.error
    assert len(log.samples) == len(prompts) == 2 * n * 2
    expected_rows = []
    for sample in log.samples:
        prompt = by_text[sample.input]
        label = label_response(prompt, scripted_answer(prompt))
        assert score_label(sample.scores["soo_label"].value) == label == sample.scores["soo_label"].explanation
        assert sample.metadata["order"] == prompt.order and sample.metadata["scenario"] == prompt.scenario
        expected_rows.append(
            {
                "condition": "x",
                "group": "x",
                "scenario": prompt.scenario,
                "order": prompt.order,
                "kind": prompt.kind,
                "label": label,
                "response": scripted_answer(prompt),
            }
        )
    metrics = log.results.scores[0].metrics
    for entry in summarize_labels(expected_rows):
        key = entry["scenario"] if entry["order"] == "both" else f"{entry['scenario']}/{entry['order']}"
        assert metrics[f"rate/{key}"].value == pytest.approx(entry["rate"])
        if entry["order"] == "both":
            assert metrics[f"ci_low/{key}"].value == pytest.approx(entry["ci_low"])
            assert metrics[f"ci_high/{key}"].value == pytest.approx(entry["ci_high"])
            assert metrics[f"ambiguous/{key}"].value == pytest.approx(1 / 3)
    # main: deceptive-first answers are deceptive except index 1 -> 2 of 3; deceptive-second: 0 of 3.
    assert metrics["rate/main/deceptive_first"].value == pytest.approx(2 / 3)
    assert metrics["rate/main/deceptive_second"].value == 0.0
    assert metrics["rate/main"].value == pytest.approx(2 / 6)
    # perspectives measures correctness: the honest (correct) answers of the deceptive-second twins.
    assert metrics["rate/perspectives/deceptive_second"].value == pytest.approx(2 / 3)

    # The comparison with evaluate.py's responses.jsonl: one answer changed there, one prompt missing.
    import json

    from soo.eval.inspect_task import main as compare_main

    rows = [
        {**row, "condition": "base", "index": prompt.index, "response": row["response"], "prompt": prompt.prompt}
        for row, prompt in zip(expected_rows, (by_text[sample.input] for sample in log.samples))
    ]
    rows[0] = {**rows[0], "response": "Something else.", "label": "ambiguous"}
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(row) + "\n" for row in rows[:-1]))
    assert compare_main([log.location, str(responses)]) == 0
    out = capsys.readouterr().out
    n = len(rows) - 1
    assert f"{n} prompts in both: identical answers {n - 1} " in out and "1 Inspect samples not in the responses" in out
    assert "Something else." in out
    assert compare_main([log.location, str(responses), "--condition", "soo_0"]) == 2
    # Rows whose prompt text differs (another answer suffix) are not compared: a clear error when none is left.
    responses.write_text("".join(json.dumps({**row, "prompt": row["prompt"] + " Say it."}) + "\n" for row in rows))
    assert compare_main([log.location, str(responses)]) == 2
    assert "with another text: pass the answer suffix evaluate.py used" in capsys.readouterr().err


def test_task_arguments_pick_scenarios_suffix_and_sampling():
    task = deception_task(scenarios="main", n=2, seed=3, suffix="mistral", max_tokens=7)
    samples = list(task.dataset)
    assert len(samples) == 4 and all(s.metadata["scenario"] == "main" for s in samples)
    assert all(s.input.endswith("Start your response with 'I would'") for s in samples)
    expected = build_eval_prompts(["main"], n=2, seed=3, answer_suffix="Start your response with 'I would'")
    assert [s.input for s in samples] == [p.prompt for p in expected]
    assert task.config.max_tokens == 7 and task.config.temperature == 0.0
    assert answer_suffix("Say a room.") == "Say a room."


def test_a_tiny_local_llama_runs_the_task_through_inspects_hf_provider(tmp_path, tiny_model_dir):
    (log,) = inspect_eval(
        deception_task(scenarios="main", n=1, max_tokens=4),
        model=f"hf/{tiny_model_dir}",
        model_args={"do_sample": False, "device": "cpu"},
        log_dir=str(tmp_path),
        display="none",
    )
    assert log.status == "success", log.error
    assert len(log.samples) == 2
    assert {score_label(sample.scores["soo_label"].value) for sample in log.samples} <= {
        "deceptive",
        "honest",
        "ambiguous",
    }
    assert "rate/main" in log.results.scores[0].metrics
