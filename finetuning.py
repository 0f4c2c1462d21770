"""SOO fine-tuning: LoRA on a causal LM, loss = lm_weight * LM + soo_weight * MSE(self, other).

The SOO term compares the output of `self_attn.o_proj` at the chosen decoder layer(s) between
each self-referencing prompt and its other-referencing twin (pairs from generate_data.py).

Launch commands (every transformers TrainingArguments flag works too):

  # CPU, embedded default model (SmolLM2-135M-Instruct), a few minutes:
  python finetuning.py --config configs/smollm2-135m-instruct.yaml

  # any config, with overrides:
  python finetuning.py --config configs/mistral-7b-instruct-v0.2.yaml --output_dir outputs/mistral --seed 1

  # SOO only, last-token mode, two layers:
  python finetuning.py --config configs/smollm2-135m-instruct.yaml --lm_weight 0 --soo_token_mode last --soo_layers 12 15

  # several GPUs of one node, DeepSpeed ZeRO-3 (on Slurm use submit_gemma_soo.sh: srun, one task per GPU):
  torchrun --nproc_per_node 4 finetuning.py --config configs/gemma-2-27b-it.yaml --deepspeed ds_config_stage3.json

  # ZeRO-3 on CPU, 2 processes (gloo), tiny model:
  torchrun --nproc_per_node 2 finetuning.py --model_name_or_path /tmp/tiny --soo_layers 2 --max_steps 5 --use_cpu --deepspeed ds_config_stage3.json --output_dir /tmp/tiny-z3

Preemption: SIGUSR1 or SIGTERM saves a checkpoint at the end of the current step and exits with
code 75; running the same command again (same --output_dir) resumes from the last complete
checkpoint. --resume_from_checkpoint no starts over; a path resumes from that checkpoint.
A full disk during a save stops the run with one error line (exit 2) naming the last complete
checkpoint, which stays intact; free space and run the same command to resume from it.
Only the same recipe resumes (soo.train.recipe): a checkpoint trained with another model, data,
LoRA, SOO, optimizer, schedule, seed or batch geometry stops the run before training, naming each
differing field; a longer --max_steps and other logging/saving cadence are fine, and
soo_run_config.json lists the segments (steps, command) that trained the adapter.

  # smoke test on a tiny random model (no download):
  python -m soo.tools.tiny_model /tmp/tiny --arch gemma2
  python finetuning.py --model_name_or_path /tmp/tiny --soo_layers 2 --max_steps 5 --use_cpu --output_dir /tmp/tiny-run
"""

from soo.core.capture import LayerResolutionError
from soo.core.cli import fail
from soo.core.modeling import ModelLoadError
from soo.core.pair_batch import PromptTooLongError
from soo.data.pair_io import PairDataError
from soo.train import PREEMPTED_EXIT_CODE
from soo.train.config import parse_finetuning_args
from soo.train.distributed import exit_process, export_torch_env_from_slurm
from soo.train.preemption import DISK_FULL_ERRNOS, disk_full_message
from soo.train.recipe import RecipeMismatchError
from soo.train.run import run_finetuning


def main(argv=None, callbacks=None) -> int:
    """Exit status: 0 done, 75 checkpointed on a signal, 2 bad input or a full disk (one error line).
    `callbacks` (TrainerCallbacks) are for tests that instrument a real run (test/scale_worker.py)."""
    export_torch_env_from_slurm()  # srun tasks -> RANK/WORLD_SIZE/LOCAL_RANK, before TrainingArguments reads them
    try:  # an unknown flag or a bad --config file exits with status 2 inside the parser
        model_args, data_args, config, config_path = parse_finetuning_args(argv)
    except ValueError as error:  # a value the configs refuse (token mode, weights, ...)
        return fail(error)
    try:
        results = run_finetuning(model_args, data_args, config, config_path, callbacks=callbacks)
    except (
        PairDataError,
        ModelLoadError,
        LayerResolutionError,
        PromptTooLongError,
        FileNotFoundError,
        RecipeMismatchError,
    ) as error:
        # Input problems: one clear line, not a traceback from deep inside a library.
        return fail(error)
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        return fail(disk_full_message(error, config.output_dir))
    return PREEMPTED_EXIT_CODE if results.get("preempted") else 0


if __name__ == "__main__":
    exit_process(main())
