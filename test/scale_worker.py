"""finetuning.py plus two test instruments, for test_scale.py (not a pytest module).

  --record_outputs FILE   after training, run the trained model (still partitioned under ZeRO-3)
                          on RECORD_INPUT_IDS in every process; rank 0 writes the logits to FILE
                          (safetensors), to compare with the adapter loaded back from disk.
  --signal_at_step K SIG  rank 0 sends itself SIG (USR1 or TERM) at the end of step K, through the
                          real handler: the other ranks must stop at the same step anyway.

  torchrun --nproc_per_node 2 test/scale_worker.py --record_outputs /tmp/out.safetensors \
      --model_name_or_path /tmp/tiny --use_cpu --deepspeed ds_config_stage3.json --output_dir /tmp/z3
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from soo.train import PREEMPTED_EXIT_CODE  # noqa: E402
from soo.train.config import parse_finetuning_args  # noqa: E402
from soo.train.distributed import exit_process, export_torch_env_from_slurm  # noqa: E402
from soo.train.run import run_finetuning  # noqa: E402

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
    export_torch_env_from_slurm()
    model_args, data_args, config, config_path = parse_finetuning_args(argv)
    results = run_finetuning(model_args, data_args, config, config_path, callbacks=callbacks)
    return PREEMPTED_EXIT_CODE if results.get("preempted") else 0


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
