"""Scale-out paths on CPU: DeepSpeed ZeRO-3 with 2 gloo processes, and preemption with resume.

Each test launches real training processes (test/scale_worker.py = finetuning.py plus two
instruments) on the tiny Llama, so what is checked is what a Slurm job runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soo.train import PREEMPTED_EXIT_CODE
from soo.train.distributed import export_torch_env_from_slurm, zero_stage
from soo.train.preemption import (
    COMPLETE_MARKER,
    choose_resume_checkpoint,
    last_complete_checkpoint,
    remove_incomplete_checkpoints,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER = REPO_ROOT / "test" / "scale_worker.py"
STEPS = 6


def common_args(tiny_model_dir, data_files, out: Path, per_device_batch: int) -> list[str]:
    train_path, test_path = data_files
    return [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data_path",
        str(train_path),
        "--eval_data_path",
        str(test_path),
        "--soo_layers",
        "2",
        "--use_cpu",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "1",
        "--lora_dropout",
        "0",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--seed",
        "0",
    ]


def one_process_worker(tiny_model_dir, data_files, out: Path) -> list[str]:
    """test/scale_worker.py in this interpreter, batch 2, STEPS steps (instrument flags go after)."""
    return [sys.executable, str(WORKER), *common_args(tiny_model_dir, data_files, out, 2), "--max_steps", str(STEPS)]


def run_command(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def torchrun(nproc: int) -> list[str]:
    # --standalone picks a free port (a fixed one collides with other runs; port 0 hangs the static rendezvous).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def _train_logs(out: Path) -> list[dict]:
    """Training-step log entries (the held-out evaluations are logged too, without 'loss')."""
    return [entry for entry in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in entry]


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


# --- DeepSpeed ZeRO-3, 2 processes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def single_process_run(tiny_model_dir, data_files, tmp_path_factory):
    """Reference: one process, no DeepSpeed, batch 4 = the global batch of 2 processes x 2."""
    out = tmp_path_factory.mktemp("single") / "run"
    result = run_command(
        [sys.executable, str(WORKER), *common_args(tiny_model_dir, data_files, out, 4), "--max_steps", "2"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_zero3_two_processes_trains_like_one_and_saves_a_loadable_adapter(
    single_process_run, tiny_model_dir, data_files, tmp_path
):
    out, recorded = tmp_path / "z3", tmp_path / "trained_logits.safetensors"
    command = [
        *torchrun(2),
        str(WORKER),
        "--record_outputs",
        str(recorded),
        *common_args(tiny_model_dir, data_files, out, 2),
        "--max_steps",
        "2",
        "--deepspeed",
        str(REPO_ROOT / "ds_config_stage3.json"),
    ]
    result = run_command(command)
    assert result.returncode == 0, result.stderr[-4000:]

    # Same global batch (the two ranks' micro-batches are the single run's batch): the first
    # step's loss must agree. Tolerance: float32 reduction order differs between the two layouts.
    z3_first, single_first = _train_logs(out)[0], _train_logs(single_process_run)[0]
    assert z3_first["step"] == single_first["step"] == 1
    for key in ("loss", "soo_loss", "lm_loss"):
        assert z3_first[key] == pytest.approx(single_first[key], rel=1e-4), key
    heldout = json.loads((out / "heldout_soo.json").read_text())
    assert heldout["heldout_before"]["soo_loss_n"] == 32, "each held-out pair counted once across the 2 ranks"

    # The adapter gathered from the ZeRO-3 shards, loaded in a plain process, computes what the
    # partitioned model computed in training.
    from peft import PeftModel
    from safetensors.torch import load_file
    from scale_worker import RECORD_INPUT_IDS
    from transformers import AutoModelForCausalLM

    trained = load_file(str(recorded))["logits"]
    with torch.no_grad():
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
        reloaded = loaded(torch.tensor(RECORD_INPUT_IDS)).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(torch.tensor(RECORD_INPUT_IDS)).logits
    torch.testing.assert_close(reloaded, trained, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(reloaded, base, atol=1e-4), "the adapter should have changed the model"
    assert all(value.numel() > 0 for value in adapter_weights(out).values()), "ZeRO-3 saved empty (partitioned) tensors"


def test_zero3_trains_the_released_kl_loss_like_one_process(tiny_model_dir, data_files, tmp_path):
    """--soo_distance kl_logits (released layout) under ZeRO-3, 2 processes x 2 pairs = 1 process x 4."""
    kl = [
        "--soo_distance",
        "kl_logits",
        "--soo_kl_positions",
        "released",
        "--lm_weight",
        "0",
        "--max_length",
        "128",
        "--use_chat_template",
        "false",
        "--max_steps",
        "1",
    ]
    single, z3 = tmp_path / "single", tmp_path / "z3"
    result = run_command([sys.executable, str(WORKER), *common_args(tiny_model_dir, data_files, single, 4), *kl])
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_command(
        [
            *torchrun(2),
            str(WORKER),
            *common_args(tiny_model_dir, data_files, z3, 2),
            *kl,
            "--deepspeed",
            str(REPO_ROOT / "ds_config_stage3.json"),
        ]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    z3_first, single_first = _train_logs(z3)[0], _train_logs(single)[0]
    assert single_first["soo_kl_logits"] > 0
    for key in ("loss", "soo_kl_logits", "soo_latent_mse"):
        assert z3_first[key] == pytest.approx(single_first[key], rel=1e-4), key


@pytest.mark.parametrize("ds_config", ["ds_config_stage2.json", "ds_config_stage3_offload.json"])
def test_other_deepspeed_configs_train_like_one_process(
    ds_config, single_process_run, tiny_model_dir, data_files, tmp_path
):
    """ZeRO-2, and ZeRO-3 with CPU offload (DeepSpeed's CPU Adam, compiled on first use: ~1 min once)."""
    out = tmp_path / "run"
    command = [
        *torchrun(2),
        str(WORKER),
        *common_args(tiny_model_dir, data_files, out, 2),
        "--max_steps",
        "2",
        "--deepspeed",
        str(REPO_ROOT / ds_config),
    ]
    result = run_command(command, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    first, single_first = _train_logs(out)[0], _train_logs(single_process_run)[0]
    for key in ("loss", "soo_loss", "lm_loss"):
        assert first[key] == pytest.approx(single_first[key], rel=1e-4), key
    assert (out / "adapter_model.safetensors").is_file()


# --- Preemption ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_model_dir, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_command(
        [sys.executable, str(WORKER), *common_args(tiny_model_dir, data_files, out, 2), "--max_steps", str(STEPS)]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("signal_name", ["USR1", "TERM"])
def test_signal_saves_a_checkpoint_and_the_rerun_resumes_to_the_same_adapter(
    signal_name, uninterrupted_run, tiny_model_dir, data_files, tmp_path
):
    out = tmp_path / "run"
    command = one_process_worker(tiny_model_dir, data_files, out)
    first = run_command([*command, "--signal_at_step", "2", signal_name])
    assert first.returncode == PREEMPTED_EXIT_CODE, first.stderr[-3000:]
    assert f"got SIG{signal_name}" in first.stdout
    # The signal lands during step 2's end; the stop is taken at the next step end.
    checkpoint = out / "checkpoint-3"
    assert (checkpoint / COMPLETE_MARKER).is_file() and (checkpoint / "optimizer.pt").is_file()
    assert not (out / "adapter_model.safetensors").exists(), "a preempted run must not look finished"

    second = run_command(command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stderr + second.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    # Held-out "before" is the untrained model's, carried over from the first run.
    before = json.loads((out / "heldout_soo.json").read_text())["heldout_before"]
    reference_before = json.loads((uninterrupted_run / "heldout_soo.json").read_text())["heldout_before"]
    assert before["soo_loss"] == pytest.approx(reference_before["soo_loss"], rel=1e-6)

    # No pickle in the run's folder or its checkpoints: the arguments are kept as JSON.
    assert not list(out.rglob("training_args.bin")) and (out / "soo_run_config.json").is_file()

    resumed, reference = adapter_weights(out), adapter_weights(uninterrupted_run)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_zero3_signal_on_one_rank_stops_both_at_the_same_step_and_resumes(tiny_model_dir, data_files, tmp_path):
    out = tmp_path / "z3"
    command = [
        *torchrun(2),
        str(WORKER),
        *common_args(tiny_model_dir, data_files, out, 2),
        "--max_steps",
        "4",
        "--deepspeed",
        str(REPO_ROOT / "ds_config_stage3.json"),
    ]
    first = run_command([*command, "--signal_at_step", "1", "USR1"])
    assert first.returncode != 0 and f"exitcode  : {PREEMPTED_EXIT_CODE}" in first.stderr, first.stderr[-3000:]
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / COMPLETE_MARKER).is_file()
    # Both ranks wrote their ZeRO shards for the same step.
    shards = sorted(path.name for path in (checkpoint / "global_step2").iterdir())
    assert any("rank_0" in name or "rank0" in name for name in shards), shards
    assert any("rank_1" in name or "rank1" in name for name in shards), shards

    second = run_command(command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert (out / "adapter_model.safetensors").is_file()


# --- Units ---------------------------------------------------------------------------------------


def _make_checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / COMPLETE_MARKER).write_text("complete\n")
    return path


def test_resume_skips_a_checkpoint_whose_save_was_interrupted(tmp_path):
    assert choose_resume_checkpoint(None, str(tmp_path / "missing")) is None
    _make_checkpoint(tmp_path, 10, complete=True)
    _make_checkpoint(tmp_path, 20, complete=True)
    torn = _make_checkpoint(tmp_path, 30, complete=False)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert choose_resume_checkpoint("auto", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert choose_resume_checkpoint("no", str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="not marked complete"):
        choose_resume_checkpoint(str(torn), str(tmp_path))
    assert remove_incomplete_checkpoints(str(tmp_path)) == [str(torn)]
    assert not torn.exists() and (tmp_path / "checkpoint-20").exists()


def test_srun_task_variables_become_torch_distributed_ones():
    srun = {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "4(x2)",
        "MASTER_ADDR": "r01g01",
        "MASTER_PORT": "29512",
    }
    environ = dict(srun)
    assert export_torch_env_from_slurm(environ)
    assert (environ["RANK"], environ["WORLD_SIZE"], environ["LOCAL_RANK"], environ["LOCAL_WORLD_SIZE"]) == (
        "5",
        "8",
        "1",
        "4",
    )
    # torchrun already set RANK; a single task; the batch shell itself (no step): left alone.
    assert not export_torch_env_from_slurm({**srun, "RANK": "0"})
    assert not export_torch_env_from_slurm({**srun, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"})
    assert not export_torch_env_from_slurm({key: value for key, value in srun.items() if key != "SLURM_STEP_ID"})
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        export_torch_env_from_slurm({key: value for key, value in srun.items() if key != "MASTER_ADDR"})


@pytest.mark.parametrize(
    "name, stage, offload",
    [
        ("ds_config_stage3.json", 3, False),
        ("ds_config_stage3_offload.json", 3, True),
        ("ds_config_stage2.json", 2, False),
    ],
)
def test_deepspeed_configs(name, stage, offload):
    config = json.loads((REPO_ROOT / name).read_text())
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    # "auto" wherever the Trainer knows the value, so the JSON never disagrees with the flags.
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # else the saved adapter is empty shards
    assert ("offload_optimizer" in zero) == offload and ("offload_param" in zero) == offload

    class Args:
        deepspeed = str(REPO_ROOT / name)

    assert zero_stage(Args()) == stage


def test_merge_cli_reproduces_the_adapted_model(single_process_run, tiny_model_dir, tmp_path):
    """The ZeRO-3 path's merge step (python -m soo.tools.merge): merged weights compute adapter outputs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from soo.tools.merge import main as merge_main

    assert merge_main([str(single_process_run), "--output_dir", str(tmp_path / "merged")]) == 0
    ids = torch.tensor([[1, 40, 50, 60, 70]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), single_process_run)
        expected = adapted.eval()(ids).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
    assert merge_main([str(tmp_path / "merged")]) == 2  # not an adapter directory: a clear error


def test_merge_adapter_under_zero3_is_refused_before_any_work(tiny_model_dir, data_files, tmp_path):
    result = run_command(
        [
            sys.executable,
            "finetuning.py",
            *common_args(tiny_model_dir, data_files, tmp_path / "run", 2),
            "--merge_adapter",
            "--deepspeed",
            str(REPO_ROOT / "ds_config_stage3.json"),
        ]
    )
    assert result.returncode == 2 and "python -m soo.tools.merge" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()
