"""SOO fine-tuning. Imports soo.core and soo.data; evaluation never imports this package.

  config       SOOConfig (TrainingArguments + the SOO settings), model/data arguments, the parser
  trainer      SOOTrainer: LM + SOO loss in one forward pass, exact metrics, checkpoint markers
  run          one run end to end: load, LoRA, held-out SOO before/after, train, save
  distributed  srun task variables to torch's, gloo process group for DeepSpeed on CPU, clean exit
  preemption   SIGUSR1/SIGTERM -> checkpoint and exit PREEMPTED_EXIT_CODE; resume from the last complete one
  recipe       what a checkpoint was trained with (recipe + segments); a resume under other settings stops

CLI: finetuning.py; Slurm: submit_gemma_soo.sh (via scripts/slurm_common.sh).
"""

# finetuning.py's exit code after it saved a checkpoint on SIGUSR1/SIGTERM: EX_TEMPFAIL from
# sysexits.h, "try again later". scripts/slurm_common.sh reads it from here to decide on requeue;
# kept in this import-light module so that reading it does not load torch.
PREEMPTED_EXIT_CODE = 75
