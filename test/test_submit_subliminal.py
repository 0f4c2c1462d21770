"""submit_subliminal.sh without a cluster or a GPU: its syntax, its #SBATCH options, and the
commands each stage would run, which must be valid `subliminal.py` invocations.

The stages run for real with a fake Slurm environment and a fake interpreter that records each
`subliminal.py ...` command instead of running it (and runs everything else, so experiment.json
and the teachers' filtering are the real ones). `submit` runs with a fake `sbatch` that records
its arguments. Seconds, no model loaded.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "submit_subliminal.sh"
VALID = ["145, 267, 891", "(12; 34; 56)", "7 8 9.", "[100, 200]", "1, 2, 3"]
INVALID = ["Sure! 1, 2, 3", "1234, 5"]
CONFIGS = {"generate": "TeacherConfig", "train": "StudentConfig", "evaluate": "TraitEvalConfig"}


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def submit_dir(tmp_path):
    """A submit directory that looks like the repository root, a fake python and Slurm tools."""
    folder = tmp_path / "submit"
    folder.mkdir()
    for name in ("subliminal.py", "soo", "scripts", "submit_subliminal.sh"):
        (folder / name).symlink_to(REPO / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = "import json, os, sys; open(os.environ['FAKE_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')"
    _executable(
        bin_dir / "python",
        f'#!/bin/bash\nif [ "${{1:-}}" = subliminal.py ]; then exec {sys.executable} -c "{record}" "$@"; fi\n'
        f'exec {sys.executable} "$@"\n',
    )
    _executable(bin_dir / "sbatch", f'#!/bin/bash\n{sys.executable} -c "{record}" sbatch "$@"\necho 100$$\n')
    _executable(bin_dir / "scontrol", "#!/bin/bash\necho localhost\n")
    return folder


def _env(tmp_path: Path, **more: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SOO_", "SUBLIMINAL_"))}
    env.update(
        PATH=f"{tmp_path / 'bin'}:{env['PATH']}",
        FAKE_LOG=str(tmp_path / "commands.jsonl"),
        SOO_PYTHON=str(tmp_path / "bin" / "python"),
        SOO_MODULES="",
        SUBLIMINAL_OUTPUT_DIR=str(tmp_path / "run"),
        SLURM_JOB_ID="4242",
        SLURM_JOB_ACCOUNT="project_test",
        SLURM_JOB_NODELIST="localhost",
    )
    env.update(more)
    return env


def _stage(submit_dir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "submit_subliminal.sh", *args], cwd=submit_dir, env=env, capture_output=True, text=True, timeout=120
    )


def _commands(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "commands.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _write_raw(path: Path, answers: list[str]) -> None:
    from soo.subliminal.records import make_record

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(make_record(i, "Continue: 1, 2", a)) + "\n" for i, a in enumerate(answers)))


def _assert_valid_invocation(argv: list[str]) -> None:
    import subliminal
    from soo.core.cli import config_from
    from soo.subliminal import evaluation, student, teacher

    assert argv[0] == "subliminal.py"
    args = subliminal.build_parser().parse_args(argv[1:])  # exits (fails the test) on a bad flag
    if args.command in CONFIGS:
        module = {"generate": teacher, "train": student, "evaluate": evaluation}[args.command]
        config_from(getattr(module, CONFIGS[args.command]), args)  # the config's own checks


def test_the_script_parses_and_its_sbatch_options_fit_a_puhti_gpu():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    options = {}
    for line in SCRIPT.read_text().splitlines():
        if line.startswith("#SBATCH "):
            name, _, value = line.split()[1].lstrip("-").partition("=")
            options[name] = value
    assert options["gres"] == "gpu:v100:1" and options["partition"] == "gpu"
    assert int(options["cpus-per-task"]) <= 10  # Puhti: at most 10 cores per GPU
    assert int(options["cpus-per-task"]) * int(options["mem-per-cpu"].rstrip("G")) <= 384 // 4
    hours = int(options["time"].split(":")[0])
    assert 0 < hours <= 72 and options["signal"] == "B:USR1@600"
    assert "requeue" in options and "account" not in options and "A" not in options


def test_teachers_stage_writes_the_layout_and_runs_valid_commands(submit_dir, tmp_path):
    root = tmp_path / "run"
    _write_raw(root / "teachers" / "control" / "raw.jsonl", VALID + INVALID)
    _write_raw(root / "teachers" / "owl" / "raw.jsonl", VALID[:3] + INVALID)
    result = _stage(submit_dir, _env(tmp_path), "teachers")
    assert result.returncode == 0, result.stdout + result.stderr
    commands = _commands(tmp_path)
    for argv in commands:
        _assert_valid_invocation(argv)
    generate = [argv for argv in commands if argv[1] == "generate"]
    assert [_flag(argv, "--output_file") for argv in generate] == [
        str(root / "teachers" / teacher / "raw.jsonl") for teacher in ("control", "owl")
    ]
    assert "--animal" not in generate[0] and _flag(generate[1], "--animal") == "owl"
    assert all(_flag(argv, "--model_name_or_path") == "Qwen/Qwen2.5-7B-Instruct" for argv in generate)
    assert {_flag(argv, "--n_prompts") for argv in generate} == {"30000"}
    (base,) = [argv for argv in commands if argv[1] == "evaluate"]
    assert _flag(base, "--output_file") == str(root / "base" / "eval.json") and "--adapter" not in base
    # The real filtering and experiment.json, in `subliminal.py run`'s layout, as the report reads it.
    from soo.subliminal.experiment import load_results

    results = load_results(root)
    assert results["config"]["animals"] == ["owl"] and results["config"]["seeds"] == [0, 1, 2]
    for key in ("n_prompts", "temperature", "prompt_seed", "epochs", "n_questions", "samples_per_question"):
        assert key in results["config"]
    assert results["filters"]["control"]["kept"] == 5 and results["filters"]["owl"]["kept"] == 3
    assert len((root / "teachers" / "owl" / "kept.jsonl").read_text().splitlines()) == 3


def test_students_task_trains_one_student_per_teacher_on_the_common_count(submit_dir, tmp_path):
    root = tmp_path / "run"
    for teacher, n in (("control", 5), ("owl", 3)):
        _write_raw(root / "teachers" / teacher / "kept.jsonl", VALID[:n])
    done = root / "students" / "control" / "seed1"  # a finished student is not trained again
    done.mkdir(parents=True)
    (done / "student.json").write_text("{}")
    result = _stage(submit_dir, _env(tmp_path, SLURM_ARRAY_TASK_ID="1"), "students")
    assert result.returncode == 0, result.stdout + result.stderr
    commands = _commands(tmp_path)
    for argv in commands:
        _assert_valid_invocation(argv)
    assert [argv[1] for argv in commands] == ["evaluate", "train", "evaluate"]
    train = commands[1]
    assert _flag(train, "--output_dir") == str(root / "students" / "owl" / "seed1")
    assert _flag(train, "--train_file") == str(root / "teachers" / "owl" / "kept.jsonl")
    assert _flag(train, "--max_examples") == "3" and _flag(train, "--seed") == "1"
    batch, accumulation = int(_flag(train, "--batch_size")), int(_flag(train, "--gradient_accumulation_steps"))
    assert batch * accumulation == 66 and batch < 22  # the published 22 x 3, in micro-batches that fit a V100
    assert [_flag(argv, "--adapter") for argv in (commands[0], commands[2])] == [
        str(done),
        _flag(train, "--output_dir"),
    ]
    assert _flag(commands[2], "--output_file") == str(root / "students" / "owl" / "seed1" / "eval.json")


def test_report_stage_and_bad_stages(submit_dir, tmp_path):
    result = _stage(submit_dir, _env(tmp_path), "report")
    assert result.returncode == 0, result.stderr
    (report,) = _commands(tmp_path)
    _assert_valid_invocation(report)
    assert _flag(report, "--output_dir") == str(tmp_path / "run")
    wrong = _stage(submit_dir, _env(tmp_path), "teacher")
    assert wrong.returncode == 2 and "not one of teachers, students, report" in wrong.stderr
    no_index = _stage(submit_dir, _env(tmp_path), "students")
    assert no_index.returncode == 2 and "--array=0-2" in no_index.stderr
    outside = _stage(submit_dir, _env(tmp_path, SLURM_JOB_ID=""), "teachers")
    assert outside.returncode == 2 and "submit it with sbatch" in outside.stderr
    assert len(_commands(tmp_path)) == 1  # nothing ran after a refusal


def test_submit_chains_three_jobs_with_dependencies(submit_dir, tmp_path):
    env = _env(tmp_path, SLURM_JOB_ID="", SUBLIMINAL_SEEDS="3 4 5 6")
    result = _stage(submit_dir, env, "submit", "-A", "project_test")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = _commands(tmp_path)
    assert [call[-1] for call in calls] == ["teachers", "students", "report"]
    assert all(call[:4] == ["sbatch", "--parsable", "-A", "project_test"] for call in calls)
    job_ids = re.findall(r"teachers (\d+), students (\d+)", result.stdout)[0]
    assert f"--dependency=afterok:{job_ids[0]}" in calls[1] and "--array=0-3" in calls[1]
    assert f"--dependency=afterany:{job_ids[1]}" in calls[2] and "--partition=small" in calls[2]
    assert not any(arg.startswith("--mem=") for call in calls for arg in call)  # #SBATCH sets --mem-per-cpu
    assert (submit_dir / "logs").is_dir()


def test_dry_run_prints_commands_and_runs_nothing(submit_dir, tmp_path):
    env = _env(tmp_path, SUBLIMINAL_DRY_RUN="1", SLURM_JOB_ID="")
    result = _stage(submit_dir, env, "report")
    assert result.returncode == 0 and "+ " in result.stdout and "subliminal.py report" in result.stdout
    submit = _stage(submit_dir, env, "submit", "-A", "project_test")
    assert submit.returncode == 0 and "nothing submitted" in submit.stdout
    assert submit.stderr.count("sbatch --parsable -A project_test") == 3
    assert _commands(tmp_path) == []  # neither subliminal.py nor sbatch ran
