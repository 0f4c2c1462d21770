"""Preemption-safe training: checkpoint on SIGUSR1/SIGTERM, resume from the last complete checkpoint.

Slurm sends a signal before a job's time limit (`#SBATCH --signal=B:USR1@600`, forwarded to the
tasks by the batch script) and SIGTERM when a job is cancelled or preempted. `PreemptionCallback`
turns either into "save a checkpoint at the end of this optimizer step and stop"; the run then
exits with `soo.train.PREEMPTED_EXIT_CODE` so the batch script knows to requeue. A later run with the same
`--output_dir` resumes from the newest checkpoint that `COMPLETE_MARKER` marks as fully written,
so a job killed in the middle of a save resumes from the checkpoint before it.

Local check (one process):
  python finetuning.py --config configs/smollm2-135m-instruct.yaml --output_dir /tmp/run &
  sleep 90; kill -USR1 $!; wait $!; echo "exit $?"          # 75, /tmp/run/checkpoint-N/ written
  python finetuning.py --config configs/smollm2-135m-instruct.yaml --output_dir /tmp/run   # resumes
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal

import torch
from transformers import TrainerCallback

from soo.core.io import write_text_atomic

logger = logging.getLogger("soo")

PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
COMPLETE_MARKER = "soo_checkpoint_complete"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# A save that fails for want of space (no space left, quota exceeded): a clear stop, not a traceback.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class PreemptionCallback(TrainerCallback):
    """Installs handlers for `signals`; at the next optimizer-step end, saves and stops training.

    The handler only records the signal (doing work inside a signal handler is unsafe). Under
    several processes every rank must stop at the same step, or the collective save would hang:
    the flag is max-reduced across ranks at every step end (one scalar, negligible next to a step).
    """

    def __init__(self, signals=PREEMPTION_SIGNALS):
        self.received_signal: int | None = None
        self.preempted = False
        self._previous_handlers = {}
        for signum in signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        if self.received_signal is None:
            # print, not logging: logging takes locks that the interrupted code may hold.
            print(
                f"[soo] got {signal.Signals(signum).name}: saving a checkpoint at the end of this step, then stopping.",
                flush=True,
            )
        self.received_signal = signum

    def restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _any_rank_signalled(self) -> bool:
        flag = 1.0 if self.received_signal is not None else 0.0
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return flag > 0
        backend = torch.distributed.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([flag], device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor.item() > 0

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_signalled():
            self.preempted = True
            control.should_save = True
            control.should_training_stop = True
        return control


def mark_checkpoint_complete(checkpoint_dir: str) -> None:
    """Written last, after every rank has finished writing `checkpoint_dir`."""
    write_text_atomic(os.path.join(checkpoint_dir, COMPLETE_MARKER), "complete\n")


def list_checkpoints(output_dir: str) -> list[tuple[int, str, bool]]:
    """(step, path, complete) for every checkpoint-N directory in `output_dir`, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path, os.path.isfile(os.path.join(path, COMPLETE_MARKER))))
    return sorted(found)


def last_complete_checkpoint(output_dir: str) -> str | None:
    complete = [path for _, path, is_complete in list_checkpoints(output_dir) if is_complete]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(output_dir: str) -> list[str]:
    """Delete checkpoint dirs without the marker (a save that was killed); returns their paths.

    Call on the main process only, before training starts. Left in place they would confuse
    checkpoint rotation and anyone resuming by hand.
    """
    removed = []
    for _, path, is_complete in list_checkpoints(output_dir):
        if not is_complete:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def choose_resume_checkpoint(requested: str | None, output_dir: str) -> str | None:
    """What `trainer.train(resume_from_checkpoint=...)` gets.

    requested None or "auto": the last complete checkpoint in output_dir, or None for a fresh run.
    "no"/"false"/"none": a fresh run even if checkpoints exist. Anything else: that path, which
    must be a complete checkpoint.
    """
    if requested is None or str(requested).lower() in ("auto", "true", "latest", "last"):
        return last_complete_checkpoint(output_dir)
    if str(requested).lower() in ("no", "false", "none", ""):
        return None
    if not os.path.isdir(requested):
        raise FileNotFoundError(f"--resume_from_checkpoint {requested}: no such directory.")
    if not os.path.isfile(os.path.join(requested, COMPLETE_MARKER)):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {requested}: not marked complete ({COMPLETE_MARKER} missing): "
            "the save that wrote it was probably interrupted. Use an earlier checkpoint."
        )
    return requested


def disk_full_message(error: OSError, output_dir: str) -> str:
    """One line for a save that failed on a full disk: what was lost and how to go on."""
    last = last_complete_checkpoint(output_dir)
    kept = f"the last complete checkpoint, {last}, is intact" if last else "no complete checkpoint was saved yet"
    return (
        f"{error.strerror or 'no space left on device'} while writing {error.filename or output_dir}: "
        f"that save is incomplete (the next run removes it); {kept}. "
        "Free space, then run the same command to resume."
    )
