"""The Slurm job scripts on a real one-node Slurm cluster on localhost (scripts/slurm_local.sh).

Submits submit_gemma_soo.sh and test/submit_gemma_soo_test.sh with `sbatch`, with resource
overrides that fit a small CPU box and a tiny random Gemma-2 instead of the 27B model: the short
test job; the main job with its defaults (V100 config, ZeRO-3 + CPU offload) as 2 srun ranks on
gloo; the missing-account error; scancel (checkpoint, no requeue); and a preemption: USR1 to the
batch shell -> both ranks checkpoint, exit 75, the job requeues itself, the second run resumes
and finishes; a node failure (scontrol DOWN, or slurm_local.sh fail-node: slurmd and every job
process SIGKILLed) under a --requeue job and under one sweep cell: Slurm requeues it, it resumes
from its last complete checkpoint and ends with an uninterrupted run's adapter.

Needs root (the cluster's daemons) and apt for Debian's slurm/munge packages when they are not
installed; skipped with the reason otherwise. About five minutes on 2 cores (three of them the
node-failure tests). The cluster is started once for the module and stopped afterwards (by the PIDs in its pid files) unless it was already
running before. Jobs run from a temporary submit directory that links to the repository, so the
logs/ and outputs of the jobs stay out of the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_LOCAL = REPO_ROOT / "scripts" / "slurm_local.sh"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
DATA10 = "test/soo_finetuning_data10.jsonl"
# What every job needs on a 2-core box instead of a Puhti GPU node. --time above the scripts'
# USR1 lead time (600 s in the main script): a shorter limit would signal at once.
CPU_OVERRIDES = ["--cpus-per-task=1", "--mem-per-cpu=2G", "--partition=gputest", "--time=15"]
JOB_TIMEOUT = 240


def _skip_reason() -> str | None:
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs a POSIX system"
    if os.geteuid() != 0:
        return "needs root: scripts/slurm_local.sh starts munged, slurmctld and slurmd"
    have_slurm = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not have_slurm and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running local cluster; yields True when it has the fake gpu:v100 GRES."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["bash", str(SLURM_LOCAL), "start"], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if "apt-get install" in output and "failed" in output:
            pytest.skip(f"could not install Slurm with apt: {output.strip()[-500:]}")
        pytest.fail(f"scripts/slurm_local.sh start failed (exit {result.returncode}):\n{output}")
    started_here = "already running" not in output
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30).stdout
    try:
        yield "gpu:v100" in gres
    finally:
        if started_here:
            stop = subprocess.run(["bash", str(SLURM_LOCAL), "stop"], capture_output=True, text=True, timeout=120)
            assert stop.returncode == 0, stop.stdout + stop.stderr


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    from soo.tools.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("slurm-model") / "tiny-gemma2", arch="gemma2")


@pytest.fixture
def submit_dir(tmp_path):
    """A submit dir that looks like the repository root (links), with an empty logs/."""
    folder = tmp_path / "submit"
    folder.mkdir()
    # Not .venv: the interpreter comes by its real path (SOO_PYTHON), because DeepSpeed's JIT-built
    # CPU op is keyed by its source path and a new path would rebuild it (30 s) in every test.
    for name in (
        "finetuning.py",
        "soo",
        "scripts",
        "configs",
        "test",
        "submit_gemma_soo.sh",
        "ds_config_stage3.json",
        "ds_config_stage3_offload.json",
        "rl_deception.py",
        "submit_rl_deception.sh",
        "sweep.py",
        "submit_sweep.sh",
        "evaluate.py",
    ):
        if (REPO_ROOT / name).exists():
            (folder / name).symlink_to(REPO_ROOT / name)
    (folder / "logs").mkdir()  # sbatch does not create the --output directory
    return folder


def _job_env(**overrides) -> dict:
    """The test's environment without any Slurm/sbatch settings of the caller, plus overrides."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SOO_"))
    }
    env.update(HF_HUB_OFFLINE="1", SOO_MODULES="", TOKENIZERS_PARALLELISM="false", SOO_PYTHON=sys.executable)
    env.update(overrides)
    return env


def _tiny_args(model_dir: Path, *more: str) -> str:
    # fp32 whatever the config says (CPU), and a layer the tiny model has (4 layers; Gemma's is 20 of 46).
    return " ".join(
        [
            "--model_name_or_path",
            str(model_dir),
            "--use_cpu",
            "--dtype",
            "float32",
            "--bf16",
            "false",
            "--soo_layers",
            "1",
            "--disable_tqdm",
            "true",
            *more,
        ]
    )


def _sbatch(submit_dir: Path, script: str, sbatch_args: list[str], env: dict):
    """`sbatch --wait`: returns when the job has ended, with the job's exit code."""
    command = ["sbatch", "--wait", *sbatch_args, script]
    return subprocess.run(command, cwd=submit_dir, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)


def _submit_main_job(submit_dir: Path, has_gpus: bool, env: dict) -> str:
    """submit_gemma_soo.sh on one task without waiting; returns the job id."""
    command = ["sbatch", "--parsable", "-A", "project_test", "--ntasks-per-node=1", *CPU_OVERRIDES]
    command += [*_gres_args(has_gpus), "submit_gemma_soo.sh"]
    result = subprocess.run(command, cwd=submit_dir, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def _job_id(sbatch_stdout: str) -> str:
    match = re.search(r"Submitted batch job (\d+)", sbatch_stdout)
    assert match, f"no job id in sbatch output: {sbatch_stdout!r}"
    return match.group(1)


def _log(submit_dir: Path, job_name: str, job_id: str) -> str:
    path = submit_dir / "logs" / f"{job_name}-{job_id}.out"
    assert path.is_file(), f"{path} missing; logs/ holds {sorted(p.name for p in (submit_dir / 'logs').iterdir())}"
    return path.read_text(errors="replace")


def _gres_args(has_gpus: bool) -> list[str]:
    # The scripts' own --gres=gpu:v100:N lines are kept when the cluster has (fake) V100s.
    return [] if has_gpus else ["--gres=none"]


def _assert_adapter(output_dir: Path, log: str):
    for name in ADAPTER_FILES:
        assert (output_dir / name).is_file(), f"{name} missing in {output_dir}; job log tail:\n{log[-3000:]}"


def test_short_test_job_trains_a_tiny_model_on_cpu(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    output_dir = tmp_path / "test-run"
    # The account from the environment this time (sbatch reads SBATCH_ACCOUNT), not -A.
    env = _job_env(
        SBATCH_ACCOUNT="project_from_env",
        SOO_DS_CONFIG="none",
        SOO_OUTPUT_DIR=str(output_dir),
        SOO_EXTRA_ARGS=_tiny_args(tiny_gemma),
    )
    result = _sbatch(
        submit_dir,
        "test/submit_gemma_soo_test.sh",
        ["--ntasks-per-node=1", *CPU_OVERRIDES, *_gres_args(slurm_cluster)],
        env,
    )
    log = _log(submit_dir, "gemma-soo-test", _job_id(result.stdout))
    assert result.returncode == 0, f"sbatch --wait exit {result.returncode}; log:\n{log[-4000:]}"
    _assert_adapter(output_dir, log)
    assert f"finetuning_test: OK: adapter saved to {output_dir}" in log
    assert "account project_from_env, partition gputest" in log and "git commit" in log  # the header
    assert f"--data_path {DATA10}" in log and "training finished (exit 0)" in log
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 5  # finetuning_test.py's --max_steps


def test_main_job_two_ranks_deepspeed_zero3_offload(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    """submit_gemma_soo.sh with its defaults (V100 config, ZeRO-3 + CPU offload, srun, one task per
    'GPU'), only smaller: 2 ranks on gloo, a tiny model."""
    output_dir = tmp_path / "main-run"
    env = _job_env(
        SOO_OUTPUT_DIR=str(output_dir),
        SOO_DATA=DATA10,
        SOO_EVAL_DATA=DATA10,
        SOO_EXTRA_ARGS=_tiny_args(tiny_gemma, "--max_steps", "3", "--save_strategy", "no"),
    )
    result = _sbatch(
        submit_dir,
        "submit_gemma_soo.sh",
        ["-A", "project_test", "--ntasks-per-node=2", *CPU_OVERRIDES, *_gres_args(slurm_cluster)],
        env,
    )
    log = _log(submit_dir, "gemma-soo", _job_id(result.stdout))
    assert result.returncode == 0, f"sbatch --wait exit {result.returncode}; log:\n{log[-4000:]}"
    _assert_adapter(output_dir, log)
    assert "tasks        2 (2 per node)" in log and "deepspeed    ds_config_stage3_offload.json" in log
    assert "config       configs/gemma-2-27b-it-v100.yaml" in log and "training finished (exit 0)" in log
    run_config = json.loads((output_dir / "soo_run_config.json").read_text())
    assert run_config["training_args"]["deepspeed"] == "ds_config_stage3_offload.json"
    assert run_config["config_file"] == "configs/gemma-2-27b-it-v100.yaml"
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize(
    "script, job_name", [("submit_gemma_soo.sh", "gemma-soo"), ("test/submit_gemma_soo_test.sh", "gemma-soo-test")]
)
def test_missing_account_fails_before_any_work(slurm_cluster, submit_dir, script, job_name):
    env = _job_env(SOO_DS_CONFIG="none")  # no -A and no SBATCH_ACCOUNT
    result = _sbatch(submit_dir, script, ["--ntasks-per-node=1", *CPU_OVERRIDES, *_gres_args(slurm_cluster)], env)
    log = _log(submit_dir, job_name, _job_id(result.stdout))
    assert result.returncode == 2, f"sbatch --wait exit {result.returncode}; log:\n{log}"
    assert "no Slurm account" in log and "sbatch -A project_xxx" in log and "SBATCH_ACCOUNT" in log
    assert "=====" not in log, "it must stop before the header (and before module load and srun)"


def test_running_the_job_script_outside_slurm_is_refused(submit_dir):
    env = _job_env()
    result = subprocess.run(
        ["bash", "submit_gemma_soo.sh"], cwd=submit_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "submit it with sbatch" in result.stderr


def _wait_for_training(submit_dir: Path, process: subprocess.Popen | None = None, timeout: float = 120) -> Path:
    """The job's log, once it shows a training step (a 'loss' line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = sorted((submit_dir / "logs").glob("*.out"))
        if logs and "'loss'" in logs[0].read_text(errors="replace"):
            return logs[0]
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    text = logs[0].read_text(errors="replace")[-3000:] if logs else "(no log)"
    raise AssertionError(f"the job did not start training in time; log:\n{text}")


def test_scancel_checkpoints_and_does_not_requeue(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    """TERM (scancel) checkpoints too, but the job must stay cancelled: no self-requeue."""
    output_dir = tmp_path / "cancelled-run"
    env = _job_env(
        SOO_DS_CONFIG="none",
        SOO_OUTPUT_DIR=str(output_dir),
        SOO_DATA=DATA10,
        SOO_EVAL_DATA=DATA10,
        SOO_EXTRA_ARGS=_tiny_args(tiny_gemma, "--max_steps", "5000", "--save_strategy", "no", "--logging_steps", "1"),
    )
    job_id = _submit_main_job(submit_dir, slurm_cluster, env)
    try:
        log_path = _wait_for_training(submit_dir)
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            if not state or state in ("CANCELLED", "COMPLETED", "FAILED"):
                break
            assert state != "PENDING", "scancel'd job was requeued"
            time.sleep(0.5)
        else:
            raise AssertionError(f"job {job_id} still {state} a minute after scancel")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)  # never leave it queued
    log = log_path.read_text(errors="replace")
    assert "batch shell got TERM" in log and "after TERM: not requeueing" in log, log[-3000:]
    assert "restart #1" not in log
    assert len(list(output_dir.glob("checkpoint-*"))) == 1, "TERM should still leave a checkpoint to resume from"


def test_preempted_job_checkpoints_requeues_and_resumes(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    """USR1 to the batch shell (what --signal=B:USR1@600 sends) -> every rank checkpoints, exit 75,
    scontrol requeue, the second run resumes from that checkpoint and completes all steps."""
    output_dir = tmp_path / "preempted-run"
    steps = 40
    env = _job_env(
        SOO_OUTPUT_DIR=str(output_dir),
        SOO_DATA=DATA10,
        SOO_EVAL_DATA=DATA10,
        SOO_DS_CONFIG="ds_config_stage3.json",  # ZeRO-3 without offload (the 2-node setup)
        SOO_EXTRA_ARGS=_tiny_args(
            tiny_gemma, "--max_steps", str(steps), "--save_strategy", "no", "--logging_steps", "1"
        ),
    )
    # --wait in the background: it returns when the job is finally done, requeues included.
    process = subprocess.Popen(
        [
            "sbatch",
            "--wait",
            "-A",
            "project_test",
            "--ntasks-per-node=2",
            *CPU_OVERRIDES,
            *_gres_args(slurm_cluster),
            "submit_gemma_soo.sh",
        ],
        cwd=submit_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = None
    try:
        log_path = _wait_for_training(submit_dir, process)
        job_id = log_path.stem.rsplit("-", 1)[1]
        assert process.poll() is None, "sbatch --wait returned before the job was signalled"
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
        stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            if job_id is not None:
                subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    log = log_path.read_text(errors="replace")
    assert process.returncode == 0, f"sbatch --wait exit {process.returncode} ({stderr}); log:\n{log[-5000:]}"
    assert "batch shell got USR1" in log
    assert "Exited with exit code 75" in log and f"requeueing job {job_id}" in log
    assert "restart #1" in log, "the requeued run appends to the same log (--open-mode=append)"
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 0 < int(checkpoints[0].name.split("-")[1]) < steps, checkpoints
    assert f"Resuming from {checkpoints[0]}" in log
    assert log.rstrip().endswith("training finished (exit 0).")
    _assert_adapter(output_dir, log)
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == steps


def test_rl_array_job_runs_one_seed_per_task_then_the_report(slurm_cluster, submit_dir):
    env = _job_env()
    out_dir = submit_dir / "rl"
    result = _sbatch(
        submit_dir,
        "submit_rl_deception.sh",
        ["-A", "test", "--array=0-1", "--partition=gputest", "--time=15", *_gres_args(False)],
        {**env, "SOO_RL_ARGS": "--quick --variants basic", "SOO_RL_OUT_DIR": str(out_dir), "SOO_RL_SEED_OFFSET": "10"},
    )
    job_id = _job_id(result.stdout)
    logs = {10 + task: _log(submit_dir, "soo-rl", f"{job_id}_{task}") for task in (0, 1)}  # seed = index + offset
    assert result.returncode == 0, f"sbatch --wait exit {result.returncode}; logs:\n{logs}"
    for seed, log in logs.items():
        assert f"SOO RL seed {seed}" in log and f"seed {seed} finished (exit 0)" in log, log[-2000:]
        assert (out_dir / f"seed_{seed}" / "results_frozen-red_authors.json").is_file()
    report = subprocess.run(
        [sys.executable, "rl_deception.py", "report", "--output_dir", str(out_dir)],
        cwd=submit_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "n = 2" in (out_dir / "report.md").read_text()


# --------------------------------------------------------------------------------------------
# Sweeps as job arrays (sweep.py submit -> submit_sweep.sh, one task per cell)


def _sweep_spec(folder: Path, tiny_model: Path, grid: dict, max_steps: int) -> Path:
    import yaml

    base = folder / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model),
                "data_path": str(REPO_ROOT / DATA10),
                "use_cpu": True,
                "dtype": "float32",
                "bf16": False,
                "report_to": "none",
                "disable_tqdm": True,
                "soo_layers": [1],
                "max_steps": max_steps,
                "save_strategy": "no",
                "logging_steps": 1,
                "learning_rate": 5e-2,
            }
        )
    )
    spec = folder / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "base_config": str(base),
                "output_dir": str(folder / "sweep"),
                "grid": grid,
                "evaluate": {
                    "protocol": "forced_choice",
                    "n": 1,
                    "scenarios": ["main"],
                    "no_capability": True,
                    "n_pairs": 4,
                },
            },
            sort_keys=False,
        )
    )  # the grid's key order is the cells' order
    return spec


def _sweep(submit_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "sweep.py", *args],
        cwd=submit_dir,
        env=_job_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _submit_sweep(submit_dir: Path, spec: Path, has_gpus: bool) -> tuple[str, str]:
    """(array job id, sweep.py submit's output)."""
    result = _sweep(
        submit_dir,
        "submit",
        str(spec),
        "--throttle",
        "2",
        "--",
        "-A",
        "project_test",
        *CPU_OVERRIDES,
        *_gres_args(has_gpus),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"submitted array job (\d+)", result.stdout)
    assert match, result.stdout
    return match.group(1), result.stdout


def _wait_for_job_to_leave_the_queue(job_id: str, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if not queued:
            return
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    raise AssertionError(f"array job {job_id} still queued after {timeout} s: {queued}")


def test_sweep_array_runs_a_two_by_two_grid_one_task_per_cell(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    spec = _sweep_spec(tmp_path, tiny_gemma, {"soo_layers": [1, 2], "seed": [0, 1]}, max_steps=2)
    job_id, output = _submit_sweep(submit_dir, spec, slurm_cluster)
    assert "--array=0-3%2" in output, output
    _wait_for_job_to_leave_the_queue(job_id)
    status = _sweep(submit_dir, "status", str(spec))
    assert status.returncode == 0 and "4 cells: 4 done" in status.stdout, status.stdout
    for index, name in enumerate(
        ["soo_layers-1__seed-0", "soo_layers-1__seed-1", "soo_layers-2__seed-0", "soo_layers-2__seed-1"]
    ):
        log = _log(submit_dir, "soo-sweep", f"{job_id}_{index}")
        assert f"SOO sweep cell {index} of {spec}" in log and f"cell {index} finished (exit 0)" in log, log[-3000:]
        cell = tmp_path / "sweep" / name
        assert (cell / "eval" / "results.json").is_file() and (cell / "done.json").is_file()
        # Training ran through srun (one process per GPU on a real node), evaluation as is.
        assert re.search(r"train: srun --kill-on-bad-exit=0 .*finetuning\.py", (cell / "cell.log").read_text())
        assert json.loads((cell / "done.json").read_text())["settings"]["seed"] == index % 2
    report = _sweep(submit_dir, "report", str(spec))
    assert report.returncode == 0 and (tmp_path / "sweep" / "report" / "report.md").is_file(), report.stderr
    again = _sweep(submit_dir, "submit", str(spec), "--", "-A", "project_test")
    assert again.returncode == 0 and "nothing to submit: 4 done" in again.stdout, again.stdout + again.stderr


def test_sweep_array_cancelled_and_failed_cells_run_again_on_resubmission(
    slurm_cluster, tiny_gemma, submit_dir, tmp_path
):
    """scancel while one cell trains and another has failed (its data file is missing): status
    shows preempted + failed; after the data file appears, the same submit command runs exactly
    those two, the first resuming from the checkpoint TERM left."""
    later = tmp_path / "later.jsonl"
    # Long enough that the training cell is still training when the other cell's failure is seen
    # (300 steps, ~14 s, finished first once on a loaded host).
    steps = 600
    spec = _sweep_spec(tmp_path, tiny_gemma, {"data_path": [str(REPO_ROOT / DATA10), str(later)]}, max_steps=steps)
    job_id, _ = _submit_sweep(submit_dir, spec, slurm_cluster)
    from soo.sweep import load_sweep

    training, failing = (tmp_path / "sweep" / cell.name for cell in load_sweep(spec).cells())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = (training / "cell.log").read_text(errors="replace") if (training / "cell.log").is_file() else ""
            if "'loss'" in log and (failing / "failed.json").is_file():
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the cells did not reach training / failure in time; log:\n{log[-3000:]}")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        _wait_for_job_to_leave_the_queue(job_id, timeout=90)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    status = _sweep(submit_dir, "status", str(spec))
    assert status.returncode == 1, status.stdout
    assert re.search(rf"preempted +{training.name}", status.stdout), status.stdout
    assert re.search(rf"failed +{failing.name} +\(train exit 2\)", status.stdout), status.stdout
    checkpoints = sorted((training / "train").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 0 < int(checkpoints[0].name.split("-")[1]) < steps, checkpoints

    shutil.copy(REPO_ROOT / DATA10, later)
    rerun, output = _submit_sweep(submit_dir, spec, slurm_cluster)
    assert "2 cell(s) to run (1 preempted, 1 failed)" in output and "--array=0-1%2" in output, output
    _wait_for_job_to_leave_the_queue(rerun)
    status = _sweep(submit_dir, "status", str(spec))
    assert status.returncode == 0 and "2 cells: 2 done" in status.stdout, status.stdout
    train_log = (training / "cell.log").read_text(errors="replace")
    assert f"Resuming from {checkpoints[0]}" in train_log, train_log[-3000:]
    assert json.loads((training / "train" / "trainer_state.json").read_text())["global_step"] == steps


# --------------------------------------------------------------------------------------------
# Node failure under a running --requeue job (scripts/slurm_local.sh fail-node: slurmd and every
# job process SIGKILLed, as in a power loss, then the node set DOWN; resume-node brings it back).
# Slurm requeues the job (Restarts+1); on this one-node cluster it can start again only once the
# node is back, so the test resumes it.

FAIL_STEPS, FAIL_SAVE_STEPS = 200, 20  # ~6 s of training: the failure lands between checkpoints


def _fail_node_after_checkpoint(train_dir: Path, job_id: str, how: str = "power-loss", timeout: float = 120) -> int:
    """Waits for the first complete checkpoint in train_dir, fails the node, checks Slurm requeued
    the job, resumes the node; returns the newest complete checkpoint step at the failure.
    how: "power-loss" (slurm_local.sh fail-node: nothing on the node gets a signal) or "down"
    (`scontrol update state=down` with slurmd alive: the job's processes get TERM, then KILL)."""
    from soo.train.preemption import list_checkpoints

    deadline = time.monotonic() + timeout
    while not any(complete for _, _, complete in list_checkpoints(str(train_dir))):
        assert time.monotonic() < deadline, f"no complete checkpoint in {train_dir} after {timeout} s"
        time.sleep(0.05)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, timeout=30).stdout.strip()
    command = {
        "power-loss": ["bash", str(SLURM_LOCAL), "fail-node", "test"],
        "down": ["scontrol", "update", f"nodename={node}", "state=down", "reason=test"],
    }[how]
    failed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 0, failed.stdout + failed.stderr
    seen = max(step for step, _, complete in list_checkpoints(str(train_dir)) if complete)
    assert seen < FAIL_STEPS, "training had already ended: the failure came too late to test anything"
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"Restarts=[1-9]", job) and "JobState=PENDING" in job, f"not requeued by Slurm:\n{job}"
    resumed = subprocess.run(["bash", str(SLURM_LOCAL), "resume-node"], capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return seen


def _assert_same_adapter(output_dir: Path, reference_dir: Path) -> None:
    """Resumed vs uninterrupted: the same steps on the same batches, optimizer and RNG state
    restored from the checkpoint, so only float summation order can differ (measured: 1.8e-7 on
    weights up to 0.33). The preemption tests' rtol 1e-4 / atol 1e-6 pass that and fail any lost or
    repeated step (one step moves the weights by ~1e-3 at this learning rate)."""
    import torch
    from safetensors.torch import load_file

    resumed, reference = (
        load_file(str(folder / "adapter_model.safetensors")) for folder in (output_dir, reference_dir)
    )
    assert resumed.keys() == reference.keys() and resumed
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def _train_uninterrupted(command: list[str], output_dir: Path) -> None:
    """The reference run: the job's training command as is, outside Slurm, into output_dir."""
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=_job_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["power-loss", "down"])
def test_node_failure_requeues_the_job_which_resumes_and_matches_an_uninterrupted_run(
    slurm_cluster, tiny_gemma, submit_dir, tmp_path, how
):
    output_dir = tmp_path / "node-failure-run"
    train_flags = _tiny_args(
        tiny_gemma, "--max_steps", str(FAIL_STEPS), "--save_steps", str(FAIL_SAVE_STEPS), "--logging_steps", "1"
    )
    env = _job_env(
        SOO_DS_CONFIG="none",
        SOO_OUTPUT_DIR=str(output_dir),
        SOO_DATA=DATA10,
        SOO_EVAL_DATA=DATA10,
        SOO_EXTRA_ARGS=train_flags + " --save_strategy steps",
    )
    job_id = _submit_main_job(submit_dir, slurm_cluster, env)
    try:
        seen = _fail_node_after_checkpoint(output_dir, job_id, how)
        _wait_for_job_to_leave_the_queue(job_id)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        subprocess.run(["bash", str(SLURM_LOCAL), "resume-node"], capture_output=True, timeout=60)
    log = _log(submit_dir, "gemma-soo", job_id)
    assert "restart #1" in log and "restart #2" not in log, log[-3000:]
    resumed = re.findall(r"Resuming from (\S+)/checkpoint-(\d+) ", log)
    assert len(resumed) == 1 and resumed[0][0] == str(output_dir) and int(resumed[0][1]) >= seen, (seen, resumed)
    # One success line, at the end: srun exits 0 on a node failure, and a run cut short by one
    # must not say it finished ("down": the first run's shell lives on for a moment to say so).
    assert log.count("training finished (exit 0).") == 1 and log.rstrip().endswith("training finished (exit 0)."), log
    first_run = log.split("restart #1")[0]
    # logging_steps 1: one loss line per step (a step TERM ended may not reach the log: 0 at least)
    lost = max(first_run.count("'loss'") - int(resumed[0][1]), 0)
    print(f"node failure ({how}): last complete checkpoint {seen}, resumed from {resumed[0][1]}, {lost} step(s) lost")
    if how == "down":
        assert "training did NOT finish: Slurm ended this run (node failure)" in first_run, first_run[-4000:]
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == FAIL_STEPS

    reference_dir = tmp_path / "uninterrupted"
    config = ["--config", "configs/gemma-2-27b-it-v100.yaml", "--data_path", DATA10, "--eval_data_path", DATA10]
    _train_uninterrupted(
        [sys.executable, "finetuning.py", *config, "--output_dir", str(reference_dir), *env["SOO_EXTRA_ARGS"].split()],
        reference_dir,
    )
    _assert_same_adapter(output_dir, reference_dir)


@pytest.mark.slow
def test_node_failure_under_one_sweep_cell_requeues_that_task_only(slurm_cluster, tiny_gemma, submit_dir, tmp_path):
    """Two cells, one at a time (%1): the node fails under the second after its first checkpoint.
    That array task is requeued, resumes and ends with an uninterrupted run's adapter; the first
    cell, done before, is neither rerun nor changed."""
    import yaml

    from soo.sweep import load_sweep
    from soo.sweep.run import cell_commands

    spec = _sweep_spec(tmp_path, tiny_gemma, {"seed": [0, 1]}, max_steps=FAIL_STEPS)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**yaml.safe_load(base.read_text()), "save_strategy": "steps", "save_steps": 20}))
    first, second = load_sweep(spec).cells()
    first_dir, second_dir = (tmp_path / "sweep" / cell.name for cell in (first, second))
    submitted = _sweep(
        submit_dir, "submit", str(spec), "--throttle", "1", "--", "-A", "project_test", *CPU_OVERRIDES,
        *_gres_args(slurm_cluster),
    )  # fmt: skip
    match = re.search(r"submitted array job (\d+)", submitted.stdout)
    assert submitted.returncode == 0 and match, submitted.stdout + submitted.stderr
    job_id = match.group(1)
    try:
        seen = _fail_node_after_checkpoint(second_dir / "train", f"{job_id}_1", timeout=JOB_TIMEOUT)
        assert (first_dir / "done.json").is_file(), "the first cell should have been done before the failure"
        first_done = (
            (first_dir / "done.json").read_bytes(),
            (first_dir / "train" / "adapter_model.safetensors").stat().st_mtime_ns,
        )
        _wait_for_job_to_leave_the_queue(job_id)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        subprocess.run(["bash", str(SLURM_LOCAL), "resume-node"], capture_output=True, timeout=60)
    status = _sweep(submit_dir, "status", str(spec))
    assert status.returncode == 0 and "2 cells: 2 done" in status.stdout, status.stdout
    first_log, second_log = (_log(submit_dir, "soo-sweep", f"{job_id}_{index}") for index in (0, 1))
    assert "restart #0" in first_log and "restart #1" not in first_log, first_log[-2000:]
    assert (first_dir / "cell.log").read_text().count(" train: ") == 1
    assert first_done == (
        (first_dir / "done.json").read_bytes(),
        (first_dir / "train" / "adapter_model.safetensors").stat().st_mtime_ns,
    )
    assert "restart #1" in second_log and second_log.rstrip().endswith("cell 1 finished (exit 0)."), second_log[-3000:]
    resumed = re.findall(r"Resuming from \S+/checkpoint-(\d+) ", (second_dir / "cell.log").read_text())
    assert len(resumed) == 1 and int(resumed[0]) >= seen, (seen, resumed)
    assert json.loads((second_dir / "train" / "trainer_state.json").read_text())["global_step"] == FAIL_STEPS

    reference_dir = tmp_path / "uninterrupted"
    command = cell_commands(load_sweep(spec), second, sys.executable)["train"]
    command[command.index("--output_dir") + 1] = str(reference_dir)
    _train_uninterrupted(command, reference_dir)
    _assert_same_adapter(second_dir / "train", reference_dir)
