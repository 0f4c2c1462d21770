"""Running sweep cells: train -> evaluate as child processes, each cell's state kept in its folder.

A cell's folder (`SweepSpec.cell_dir`) holds:
  train/        finetuning.py --output_dir: a rerun resumes from its last complete checkpoint
  eval/         evaluate.py --output_dir (results.json, report.md, ...)
  cell.log      both children's output, appended across reruns
  cell.lock     held by the runner working on the cell (soo.core.cell_lock): another runner skips
                the cell and says so; a killed runner's lock is recovered
  one state file, written atomically:
    done.json     written last, after evaluate.py succeeded (with the runner's host and pid): a
                  rerun skips the cell
    failed.json   the step that failed, its exit status: a rerun runs the cell again
    running.json  host, pid, Slurm job and task ids, start time: a process is working on it
    preempted.json  training stopped by a signal (exit 75: preemption, the time limit) after
                  checkpointing: a rerun resumes it
No state file: pending. A cell that fails never stops the others. A cell whose training finished
(its adapter is saved) is not trained again when only its evaluation is missing.

Stopping: after `forward_stop_signals()`, USR1 or TERM (Slurm's time-limit warning, scancel,
preemption) reaches every running child as USR1: finetuning.py checkpoints and exits 75, the cell
is left preempted, and no further step or cell starts.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from soo.core.cell_lock import CellLock, process_alive
from soo.core.io import write_json_atomic
from soo.sweep.grid import SweepCell, SweepSpec, finetuning_flags

REPO_ROOT = Path(__file__).resolve().parents[2]
STATES = ("done", "running", "preempted", "failed", "pending")
SKIPPED = "skipped"  # run_cell's answer for a cell another runner holds (or finished meanwhile): not a state file
STATE_FILES = {state: f"{state}.json" for state in STATES if state != "pending"}
PREEMPTED_EXIT_CODE = 75  # soo.train.PREEMPTED_EXIT_CODE; not imported: the sweep never loads torch
# A command prefix for the training child, e.g. `srun --kill-on-bad-exit=0 ...` in a Slurm array task
# (submit_sweep.sh sets it), so multi-GPU training gets one process per GPU; evaluation runs as is.
TRAIN_LAUNCHER_ENV = "SOO_SWEEP_TRAIN_LAUNCHER"


_running: set[subprocess.Popen] = set()  # children of run_cell, for forward_stop_signals
_running_lock = threading.Lock()
_stop_requested = threading.Event()


def forward_stop_signals() -> None:
    """From now on USR1 and TERM ask every running child to checkpoint and stop (as USR1, which
    finetuning.py answers with a checkpoint and exit 75) and keep new steps and cells from starting.
    Call it from the main thread of a sweep command."""

    def stop(signum, frame):
        _stop_requested.set()
        with _running_lock:
            children = list(_running)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGUSR1)

    for signum in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, stop)


def _run_child(command: list[str], log_file) -> int:
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    with _running_lock:
        _running.add(child)
    if _stop_requested.is_set():  # the signal came while the child was starting
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGUSR1)
    try:
        return child.wait()
    finally:
        with _running_lock:
            _running.discard(child)


def training_finished(folder: Path) -> bool:
    """finetuning.py saves the adapter only when training ends (a preempted run leaves checkpoints)."""
    return (folder / "train" / "adapter_model.safetensors").is_file()


def evaluate_flags(values: dict) -> list[str]:
    """`--flag value` for evaluate.py: True is a bare switch, False and None leave the flag out."""
    flags = []
    for key, value in values.items():
        if value is True:
            flags.append(f"--{key}")
        elif value is False or value is None:
            continue
        else:
            items = value if isinstance(value, (list, tuple)) else [value]
            flags += [f"--{key}", *map(str, items)]
    return flags


def cell_commands(spec: SweepSpec, cell: SweepCell, python: str = sys.executable) -> dict[str, list[str]]:
    """The two child commands of a cell, run from the repository root (training behind the
    $SOO_SWEEP_TRAIN_LAUNCHER prefix when it is set)."""
    folder = spec.cell_dir(cell)
    launcher = shlex.split(os.environ.get(TRAIN_LAUNCHER_ENV, ""))
    return {
        "train": [
            *launcher,
            python,
            str(REPO_ROOT / "finetuning.py"),
            "--config",
            str(spec.base_config),
            "--output_dir",
            str(folder / "train"),
            *finetuning_flags({**spec.train, **cell.settings}),
        ],
        "evaluate": [
            python,
            str(REPO_ROOT / "evaluate.py"),
            "--adapters",
            str(folder / "train"),
            "--output_dir",
            str(folder / "eval"),
            *evaluate_flags(spec.evaluate),
        ],
    }


def cell_state(spec: SweepSpec, cell: SweepCell) -> tuple[str, dict]:
    """(state, the state file's contents); a running marker whose local process is gone reads as failed."""
    import json

    folder = spec.cell_dir(cell)
    for state in ("done", "running", "preempted", "failed"):
        path = folder / STATE_FILES[state]
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}
            if (
                state == "running"
                and record.get("host") == socket.gethostname()
                and not process_alive(record.get("pid"))
            ):
                return "failed", {**record, "reason": "its process is gone (killed?)"}
            return state, record
    return "pending", {}


def _set_state(folder: Path, state: str, record: dict) -> None:
    for other in STATE_FILES.values():
        (folder / other).unlink(missing_ok=True)
    write_json_atomic(folder / STATE_FILES[state], record)


def run_cell(spec: SweepSpec, cell: SweepCell, python: str = sys.executable, log=print) -> str:
    """Train then evaluate one cell under its lock; returns the state this call left it in, or
    SKIPPED when it produced nothing: another live runner holds the cell's lock (one log line says
    who) or the cell is done already. The done check comes after the lock, so that check-then-train
    is one runner's: another may have finished the cell while this one was listing or waiting."""
    folder = spec.cell_dir(cell)
    with CellLock(folder, cell.name, log) as lock:
        if not lock.acquired:
            return SKIPPED
        if cell_state(spec, cell)[0] == "done":
            log(f"cell {cell.name} is done already (done.json); skipping")
            return SKIPPED
        return _train_and_evaluate(spec, cell, folder, python, log)


def _train_and_evaluate(spec: SweepSpec, cell: SweepCell, folder: Path, python: str, log) -> str:
    started = time.time()
    _set_state(
        folder,
        "running",
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
            "slurm_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        },
    )
    seconds = {}
    with (folder / "cell.log").open("a", encoding="utf-8") as cell_log:
        for step, command in cell_commands(spec, cell, python).items():
            if step == "train" and training_finished(folder):
                continue  # an earlier run trained it; only the evaluation is missing
            if _stop_requested.is_set():
                _set_state(
                    folder,
                    "preempted",
                    {"step": step, "exit_code": None, "seconds": seconds, "reason": "stop signal before this step"},
                )
                return "preempted"
            cell_log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {step}: {' '.join(command)}\n")
            cell_log.flush()
            step_started = time.time()
            code = _run_child(command, cell_log)
            seconds[step] = round(time.time() - step_started, 1)
            # Exit 0 without the adapter is no finished training (srun exits 0 when its node fails,
            # for one): evaluating would fail, or score a stale adapter.
            no_adapter = code == 0 and step == "train" and not training_finished(folder)
            if code != 0 or no_adapter:
                # Exit 75: training checkpointed on a signal. Any step a stop signal ended is resumable too.
                preempted = (step == "train" and code == PREEMPTED_EXIT_CODE) or _stop_requested.is_set()
                state = "preempted" if preempted else "failed"
                record = {"step": step, "exit_code": code, "seconds": seconds, "log": str(folder / "cell.log")}
                if no_adapter:
                    record["reason"] = "training exited 0 without saving the adapter"
                _set_state(folder, state, record)
                log(
                    f"{cell.name}: {state} in {step} (exit {code}{', no adapter saved' if no_adapter else ''}); log {folder / 'cell.log'}"
                )
                return state
    _set_state(
        folder,
        "done",
        {
            "settings": cell.settings,
            "kind": cell.kind,
            "seconds": seconds,
            "finished": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        },
    )
    log(f"{cell.name}: done in {time.time() - started:.0f} s")
    return "done"


def run_local(spec: SweepSpec, jobs: int = 1, python: str = sys.executable, log=print) -> dict[str, str]:
    """Every cell not done, `jobs` at a time on this machine; a cell another live runner holds is
    skipped (run_cell). {cell name: final state, or SKIPPED}; the skipped cells are logged last."""
    current = {cell.name: cell_state(spec, cell)[0] for cell in spec.cells()}
    cells = [cell for cell in spec.cells() if current[cell.name] != "done"]
    running = sum(state == "running" for state in current.values())
    log(
        f"{len(cells)} cell(s) to run, {sum(state == 'done' for state in current.values())} done already"
        + (f", {running} marked running (left to their runner while it holds the lock)" if running else "")
        + f"; {jobs} at a time"
    )
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Cells side by side share the cores instead of each starting one thread per core.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        log(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} per cell (set it to override)")
    states = dict(current)

    def run_unless_stopped(cell: SweepCell) -> str:
        return "pending" if _stop_requested.is_set() else run_cell(spec, cell, python, log)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for cell, state in zip(cells, pool.map(run_unless_stopped, cells)):
            states[cell.name] = state
    skipped = [name for name, state in states.items() if state == SKIPPED]
    if skipped:
        log(f"skipped {len(skipped)} cell(s) another runner trained or is training: {', '.join(skipped)}")
    return states


def run_summary(spec: SweepSpec, states: dict[str, str]) -> str:
    """The last line of `sweep.py run`: the sweep's cells done now, and, apart, the cells this runner
    skipped, which are another runner's results (done.json names that runner), not this one's."""
    now = {cell.name: cell_state(spec, cell)[0] for cell in spec.cells()}
    skipped = [name for name in now if states.get(name) == SKIPPED]
    not_done = [name for name, state in now.items() if state != "done" and name not in skipped]
    return (
        f"{sum(state == 'done' for state in now.values())}/{len(now)} cells done"
        + ("; skipped (another runner's): " if skipped else "")
        + ", ".join(name + ("" if now[name] == "done" else f" ({now[name]} now)") for name in skipped)
        + (f"; not done: {', '.join(not_done)}" if not_done else "")
    )


def status_table(spec: SweepSpec) -> tuple[list[str], dict[str, int]]:
    """A line per cell and the count per state."""
    counts = dict.fromkeys(STATES, 0)
    lines = []
    for cell in spec.cells():
        state, record = cell_state(spec, cell)
        counts[state] += 1
        detail = ""
        if state in ("failed", "preempted"):
            detail = record.get("reason") or f"{record.get('step', '?')} exit {record.get('exit_code', '?')}"
        elif state == "running":
            job = record.get("slurm_job_id")
            detail = f"{record.get('host', '?')} pid {record.get('pid', '?')}" + (f", job {job}" if job else "")
        elif state == "done":
            detail = ", ".join(f"{step} {value:.0f} s" for step, value in (record.get("seconds") or {}).items())
        lines.append(f"{state:<10} {cell.name}" + (f"  ({detail})" if detail else ""))
    return lines, counts
