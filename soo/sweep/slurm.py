"""Sweeps on Slurm: one `sbatch --array` job, one array task per cell, throttled with `%K`.

`python sweep.py submit SPEC --throttle K -- SBATCH_ARGS...` submits submit_sweep.sh with
`--array=<indices of the cells not done>%K`; every task runs `sweep.py run-cell SPEC --index
$SLURM_ARRAY_TASK_ID` (soo.sweep.run.run_cell), with training launched through srun
(SOO_SWEEP_TRAIN_LAUNCHER, set by the job script from scripts/slurm_common.sh). The cells' state
files are the only bookkeeping: a rerun of `submit` sends again what is not done (failed,
preempted, pending) and leaves done cells and cells a live task works on alone.

Submitted array job ids are kept in OUTPUT_DIR/slurm_jobs.json, so that a second `submit` while an
earlier array is still queued is refused instead of running the same cells twice.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from soo.core.io import write_json_atomic
from soo.sweep.grid import SweepSpec
from soo.sweep.run import cell_state

JOB_SCRIPT = "submit_sweep.sh"
JOB_NAME = "soo-sweep"  # the script's --job-name, the %x of its logs/%x-%A_%a.out
JOBS_FILE = "slurm_jobs.json"


class SubmitError(RuntimeError):
    """The sweep cannot be submitted: one line for the user (exit status 2)."""


def array_ranges(indices: list[int]) -> str:
    """Sorted indices as Slurm's --array list: [0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    parts, values = [], sorted(set(indices))
    start = previous = None
    for value in values + [None]:
        if start is not None and (value is None or value != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if value is not None and start is None:
            start = value
        previous = value
    return ",".join(parts)


def _squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """{job or array-task id: state} of those squeue still lists (pending, running, ...); None
    when there is no squeue here (then nothing can be said about them)."""
    if shutil.which("squeue") is None:
        return None
    # One call per id: squeue rejects the whole list when one id has left the queue.
    states = {}
    for job_id in job_ids:
        result = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                task, _, state = line.strip().partition(" ")
                if task:
                    states[task] = state
    return states


def cells_to_submit(spec: SweepSpec) -> tuple[list[int], dict[str, int]]:
    """Indices of the cells an array should run and the count of cells per state. Done cells and
    cells whose Slurm task is still in the queue are left out; a cell marked running whose task
    squeue no longer lists (a node failure, a hard kill) counts as failed and runs again."""
    indices, counts = [], {}
    for index, cell in enumerate(spec.cells()):
        state, record = cell_state(spec, cell)
        if state == "running" and record.get("slurm_job_id"):
            task = str(record["slurm_job_id"]) + (f"_{record['slurm_task_id']}" if record.get("slurm_task_id") else "")
            if _squeue_states([task]) == {}:
                state = "failed"
        counts[state] = counts.get(state, 0) + 1
        if state not in ("done", "running"):
            indices.append(index)
    return indices, counts


def _submitted_jobs(spec: SweepSpec) -> list[dict]:
    """The array jobs recorded in slurm_jobs.json ([] when it is missing or unreadable: the cell
    folders, not this file, say what is done)."""
    path = spec.output_dir / JOBS_FILE
    try:
        jobs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        return []
    return [job for job in jobs if isinstance(job, dict)] if isinstance(jobs, list) else []


def queued_sweep_jobs(spec: SweepSpec) -> dict[str, str]:
    """Array jobs this sweep submitted that squeue still lists: {task id: state}."""
    jobs = _submitted_jobs(spec)
    return _squeue_states([str(job["job_id"]) for job in jobs if "job_id" in job]) or {}


def sbatch_command(spec: SweepSpec, indices: list[int], throttle: int | None, sbatch_args: list[str]) -> list[str]:
    array = array_ranges(indices) + (f"%{throttle}" if throttle else "")
    return ["sbatch", "--parsable", f"--array={array}", *sbatch_args, JOB_SCRIPT, str(spec.path)]


def submit(
    spec: SweepSpec, throttle: int | None, sbatch_args: list[str], dry_run: bool = False, log=print
) -> str | None:
    """Submit the cells that are not done as one array job from the current folder (the repository
    root); returns the job id (None when nothing is left to run or on a dry run)."""
    if not Path(JOB_SCRIPT).is_file():
        raise SubmitError(f"{JOB_SCRIPT} not found in {Path.cwd()}: run sweep.py submit from the repository root")
    indices, counts = cells_to_submit(spec)
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    if not indices:
        log(f"nothing to submit: {summary}")
        return None
    command = sbatch_command(spec, indices, throttle, sbatch_args)
    log(f"{len(indices)} cell(s) to run ({summary}): " + " ".join(command))
    if dry_run:
        return None
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found: submit from a Slurm login node (or run the sweep here: sweep.py run)")
    queued = queued_sweep_jobs(spec)
    if queued:
        first = next(iter(queued))
        raise SubmitError(
            f"an earlier array of this sweep is still in the queue ({len(queued)} task(s), e.g. "
            f"{first} {queued[first]}): wait for it or scancel it, then submit again"
        )
    Path("logs").mkdir(exist_ok=True)  # sbatch does not create the --output folder
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SubmitError(f"sbatch failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    match = re.match(r"\s*(\d+)", result.stdout)
    if not match:
        raise SubmitError(f"no job id in sbatch's output: {result.stdout.strip()!r}")
    job_id = match.group(1)
    _record_job(spec, job_id, indices)
    log(
        f"submitted array job {job_id}: {len(indices)} task(s)"
        + (f", {throttle} at a time" if throttle else "")
        + f"; logs logs/{JOB_NAME}-{job_id}_INDEX.out\n"
        f"then: python sweep.py status {spec.path}   and   python sweep.py report {spec.path}"
    )
    return job_id


def _record_job(spec: SweepSpec, job_id: str, indices: list[int]) -> None:
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        spec.output_dir / JOBS_FILE, [*_submitted_jobs(spec), {"job_id": job_id, "array": array_ranges(indices)}]
    )
