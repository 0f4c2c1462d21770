"""finetuning.py end to end on a tiny model, its YAML configs, and every bad-input message."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import finetuning
from soo.train.config import ConfigError, parse_finetuning_args

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_cli_trains_saves_and_reports_heldout_soo(tiny_model_dir, data_files, tmp_path):
    train_path, test_path = data_files
    out = tmp_path / "run"
    command = [
        sys.executable,
        "finetuning.py",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data_path",
        str(train_path),
        "--eval_data_path",
        str(test_path),
        "--soo_layers",
        "2",
        "--max_steps",
        "3",
        "--use_cpu",
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(out),
        "--merge_adapter",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "1",
        "--activation_checkpointing",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Held-out SOO" in result.stdout and "before:" in result.stdout and "after:" in result.stdout

    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_state.json",
        "soo_run_config.json",
        "heldout_soo.json",
        "merged/model.safetensors",
    ):
        assert (out / name).is_file(), name
    run_config = json.loads((out / "soo_run_config.json").read_text())
    assert run_config["soo_args"]["soo_layers"] == [2]
    assert run_config["training_args"]["max_steps"] == 3
    heldout = json.loads((out / "heldout_soo.json").read_text())
    assert heldout["heldout_before"]["soo_loss_n"] == 32 and heldout["heldout_after"]["soo_loss"] > 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("soo_loss" in entry and "lm_loss" in entry for entry in history)

    # The saved adapter on the base model and the merged model compute the same function.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 40, 50, 60, 70]])
    with torch.no_grad():
        adapted = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()(ids).logits
        )
        merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    torch.testing.assert_close(adapted, merged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(adapted, base), "training should have moved the adapter"


def test_yaml_config_sets_defaults_and_flags_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "soo_token_mode": "last",
                "learning_rate": 3e-4,
                "soo_layers": [5, 7],
                "lora_r": 4,
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    model_args, data_args, soo_config, path = parse_finetuning_args(
        ["--config", str(config), "--soo_token_mode", "mean", "--max_steps", "7"]
    )
    assert path == str(config)
    assert soo_config.soo_token_mode == "mean"  # flag beats YAML
    assert soo_config.learning_rate == 3e-4 and soo_config.soo_layers == [5, 7] and model_args.lora_r == 4
    assert soo_config.max_steps == 7
    assert parse_finetuning_args([f"--config={config}"])[2].soo_token_mode == "last"


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("soo_layer: 5\nlearning_rate: 0.001\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_finetuning_args(["--config", str(config)])
    assert exit_info.value.code == 2 and "soo_layer" in capsys.readouterr().err


def test_a_value_the_config_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match="nothing to train"):
        parse_finetuning_args(["--lm_weight", "0", "--soo_weight", "0"])


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_parses(config):
    # GPU configs ask for bf16, which TrainingArguments allows on a CPU only with --use_cpu.
    model_args, data_args, soo_config, _ = parse_finetuning_args(["--config", str(config), "--use_cpu"])
    assert soo_config.soo_layers, "each model config names its SOO layer"
    assert soo_config.learning_rate > 0 and model_args.lora_r > 0


# --- bad input: one clear line on stderr, exit code 2, nothing written ---------------------------


def _run_main(argv, capsys):
    try:
        code = finetuning.main(argv)
    except SystemExit as exit_info:  # what the parser refuses (flags, --config files) exits there
        code = exit_info.code
    return code, capsys.readouterr().err


def _base_argv(model_dir, data_path, out):
    return [
        "--model_name_or_path",
        str(model_dir),
        "--data_path",
        str(data_path),
        "--use_cpu",
        "--max_steps",
        "1",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--soo_layers",
        "1",
    ]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"self_prompt": "a", "other_prompt": "b"}\n{"self_prompt": "a", \n', r"line 2"),
        ('{"self_prompt": "a"}\n', r"missing"),
        ("", r"no pairs"),
        ('["self_prompt", "other_prompt"]\n', r"line 1"),
    ],
    ids=["malformed-json", "missing-key", "empty", "not-an-object"],
)
def test_bad_data_file_names_file_and_problem(content, expected, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    code, err = _run_main(_base_argv(tiny_model_dir, data, out), capsys)
    assert code == 2 and "pairs.jsonl" in err
    assert re.search(expected, err), err
    assert not out.exists(), "nothing may be written when the input is bad"


def test_layer_out_of_range_gives_the_valid_range(tiny_model_dir, data_files, tmp_path, capsys):
    argv = _base_argv(tiny_model_dir, data_files[0], tmp_path / "out")
    argv[argv.index("--soo_layers") + 1] = "9"
    code, err = _run_main(argv, capsys)
    assert code == 2 and "valid indices are 0..3" in err
    assert not (tmp_path / "out").exists()


def test_module_path_not_found_lists_submodules(tiny_model_dir, data_files, tmp_path, capsys):
    code, err = _run_main(
        _base_argv(tiny_model_dir, data_files[0], tmp_path / "out") + ["--soo_module", "attn.o"], capsys
    )
    assert code == 2 and "attn.o" in err and "self_attn.o_proj" in err and "mlp" in err
    assert not (tmp_path / "out").exists()


def test_unknown_model_offline_is_a_clear_message(data_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _run_main(_base_argv("nobody-here/no-such-model-xyz", data_files[0], tmp_path / "out"), capsys)
    assert code == 2
    assert "no-such-model-xyz" in err and "hf download" in err and "Traceback" not in err


def test_missing_data_file(tiny_model_dir, tmp_path, capsys):
    code, err = _run_main(_base_argv(tiny_model_dir, tmp_path / "nope.jsonl", tmp_path / "out"), capsys)
    assert code == 2 and "nope.jsonl" in err


def test_bad_token_mode_is_refused(tiny_model_dir, data_files, tmp_path, capsys):
    code, err = _run_main(
        _base_argv(tiny_model_dir, data_files[0], tmp_path / "out") + ["--soo_token_mode", "middle"], capsys
    )
    assert code == 2 and "full, last, mean" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, r"--config .*missing\.yaml: no such file"),
        ("soo_layers: [5\nlearning_rate: 1e-3\n", r"c\.yaml: YAML syntax error at line \d+, column \d+"),
        ("soo_layer: 5\n", r"c\.yaml: unknown argument\(s\) soo_layer"),
        ("- 1\n- 2\n", r"c\.yaml: expected a mapping"),
    ],
    ids=["missing-file", "syntax-error", "unknown-key", "not-a-mapping"],
)
def test_bad_config_file_is_one_line_and_exit_2(content, expected, tmp_path, capsys):
    config = tmp_path / ("missing.yaml" if content is None else "c.yaml")
    if content is not None:
        config.write_text(content)
    code, err = _run_main(["--config", str(config), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2 and re.search(expected, err), err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_config_flag_without_a_path(capsys):
    code, err = _run_main(["--config"], capsys)
    assert code == 2 and "error: argument --config: expected one argument" in err


@pytest.mark.parametrize("accelerator", [False, True])
def test_without_an_accelerator_training_defaults_to_the_cpu_so_bf16_autocast_works(accelerator, monkeypatch):
    from soo.train import config as config_module

    monkeypatch.setattr(config_module, "_has_accelerator", lambda: accelerator)
    if accelerator:  # with a GPU the Trainer picks it; nothing is forced
        _, _, config, _ = config_module.parse_finetuning_args(["--output_dir", "/tmp/unused"])
        assert config.use_cpu is False
    else:
        _, _, config, _ = config_module.parse_finetuning_args(["--bf16", "true", "--output_dir", "/tmp/unused"])
        assert config.use_cpu is True and config.bf16 is True
