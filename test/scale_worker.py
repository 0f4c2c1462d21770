"""finetuning.py plus test instruments, for test_scale.py and test_reliability.py (not a pytest module).

  --record_outputs FILE   after training, run the trained model (still partitioned under ZeRO-3)
                          on RECORD_INPUT_IDS in every process; rank 0 writes the logits to FILE
                          (safetensors), to compare with the adapter loaded back from disk.
  --signal_at_step K SIG  rank 0 sends itself SIG (USR1 or TERM) at the end of step K, through the
                          real handler: the other ranks must stop at the same step anyway.
  --kill_at_step K RANK   process RANK SIGKILLs itself at the end of step K (a crash no handler sees).
  --enospc_at_checkpoint K  the first torch.save into checkpoint-K (training_args.bin) fails with ENOSPC,
                          after a few bytes, as on a full disk (its adapter is already written).

  torchrun --nproc_per_node 2 test/scale_worker.py --record_outputs /tmp/out.safetensors \
      --model_name_or_path /tmp/tiny --use_cpu --deepspeed ds_config_stage3.json --output_dir /tmp/z3
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import finetuning  # noqa: E402
from soo.train.distributed import exit_process  # noqa: E402

RECORD_INPUT_IDS = [[1, 40, 50, 60, 70, 80, 90, 33]]


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class RecordOutputs(TrainerCallback):
    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():  # every rank runs it: ZeRO-3 gathers each layer's weights collectively
            logits = model(input_ids=torch.tensor(RECORD_INPUT_IDS)).logits.float().contiguous()
        model.train(was_training)
        if _is_rank_zero():
            from safetensors.torch import save_file

            save_file({"logits": logits}, self.path)


class SignalAtStep(TrainerCallback):
    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and _is_rank_zero():
            os.kill(os.getpid(), self.signum)


class KillAtStep(TrainerCallback):
    def __init__(self, step: int, rank: int):
        self.step, self.rank = step, rank

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and int(os.environ.get("RANK", "0")) == self.rank:
            print(
                f"[scale_worker] rank {self.rank} SIGKILLs itself after step {self.step} at {time.time():.3f}",
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)


def fail_checkpoint_writes(step: int) -> None:
    """torch.save into checkpoint-`step` writes a few bytes, then raises ENOSPC (a full disk)."""
    import errno

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and f"checkpoint-{step}" in Path(f).parts:
            Path(f).write_bytes(b"PK\x03\x04 torn")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def main(argv: list[str]) -> int:
    callbacks = []
    if "--record_outputs" in argv:
        position = argv.index("--record_outputs")
        callbacks.append(RecordOutputs(argv[position + 1]))
        del argv[position : position + 2]
    if "--signal_at_step" in argv:
        position = argv.index("--signal_at_step")
        step, name = int(argv[position + 1]), argv[position + 2]
        callbacks.append(SignalAtStep(step, getattr(signal, f"SIG{name}")))
        del argv[position : position + 3]
    if "--kill_at_step" in argv:
        position = argv.index("--kill_at_step")
        callbacks.append(KillAtStep(int(argv[position + 1]), int(argv[position + 2])))
        del argv[position : position + 3]
    if "--enospc_at_checkpoint" in argv:
        position = argv.index("--enospc_at_checkpoint")
        fail_checkpoint_writes(int(argv[position + 1]))
        del argv[position : position + 2]
    return finetuning.main(argv, callbacks=callbacks)


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
