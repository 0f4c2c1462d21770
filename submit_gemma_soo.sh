#!/bin/bash
# SOO LoRA fine-tuning of Gemma-2-27b-it on one CSC Puhti GPU node (4x V100 32 GB), one task per GPU.
#
# Submit from the repository root (paths are relative to it; the log dir must exist first,
# sbatch does not create it):
#   mkdir -p logs
#   sbatch -A project_xxx submit_gemma_soo.sh          # or: export SBATCH_ACCOUNT=project_xxx
#   sbatch -A project_xxx --nodes=2 submit_gemma_soo.sh  # two nodes, 8 GPUs: same script
#   SOO_OUTPUT_DIR=outputs/gemma-seed1 SOO_EXTRA_ARGS="--seed 1" sbatch -A project_xxx submit_gemma_soo.sh
# Before: fetch the weights on a login node into $HF_HOME (compute nodes run offline) and make
# the data with generate_data.py (docs/guides/cluster.md).
#
# Environment overrides (defaults in brackets; details in scripts/slurm_common.sh):
#   SOO_CONFIG [configs/gemma-2-27b-it-v100.yaml: fp32, V100 has no bf16]
#   SOO_DS_CONFIG [ds_config_stage3_offload.json: ZeRO-3, params+optimizer in CPU RAM; none = no DeepSpeed;
#                  ds_config_stage3.json (no offload) fits with --nodes=2]
#   SOO_DATA, SOO_EVAL_DATA, SOO_OUTPUT_DIR [the config's]  SOO_EXTRA_ARGS [none; extra finetuning.py flags]
#   SOO_PYTHON [.venv/bin/python or python3]  SOO_MODULES [pytorch; empty = no module load]
#   SOO_REQUEUE [1]  HF_HOME [/scratch/$SLURM_JOB_ACCOUNT/$USER/hf-cache]  HF_HUB_OFFLINE [1]
#
# Time limit: Slurm sends USR1 to this shell 10 min before the limit; it is forwarded to the
# training, which saves a checkpoint and exits with 75; the job then requeues itself and the next
# run resumes from that checkpoint (same output dir). TERM (scancel, preemption) checkpoints too
# but does not requeue. Now, by hand: scancel --signal=USR1 --batch JOBID. Log: logs/gemma-soo-JOBID.out.
#
# On a machine without GPUs (e.g. the local test cluster of scripts/slurm_local.sh) override the
# resources and run a tiny model on CPU:
#   SOO_DS_CONFIG=none SOO_EXTRA_ARGS="--model_name_or_path DIR --use_cpu --dtype float32 --bf16 false --soo_layers 1" \
#     sbatch -A test --gres=none --ntasks-per-node=1 --cpus-per-task=1 --partition=gputest --time=15 submit_gemma_soo.sh
# Keep --time above the USR1 lead time (10 min): with a shorter limit the signal comes at once.
#
#SBATCH --job-name=gemma-soo          # name in squeue, and the %x of the log file name
#SBATCH --partition=gpu               # Puhti GPU partition (3 days max); gputest is for <=15 min tests
#SBATCH --nodes=1                     # one node = 4 V100; `sbatch --nodes=2` for two (same script)
#SBATCH --ntasks-per-node=4           # one training process per GPU (started by srun below)
#SBATCH --cpus-per-task=10            # Puhti allows at most 10 cores per GPU: data loading, optimizer on CPU
#SBATCH --gres=gpu:v100:4             # all 4 GPUs of each node
#SBATCH --mem-per-cpu=8G              # 8G x 10 cores x 4 GPUs = 320 GB of the node's 384 GB. ZeRO-3 with CPU
#                                     # offload keeps the fp32 27B weights (~101 GiB) in RAM: ~114 GiB steady
#                                     # per node (python -m soo.tools.memory configs/gemma-2-27b-it-v100.yaml --gpus 4
#                                     # --nodes 1 --stage 3 --offload optimizer+params); the rest covers loading
#                                     # shards, pinned buffers and the OS. Per CPU, so it shrinks with
#                                     # --cpus-per-task overrides. Change it with --mem-per-cpu (sbatch
#                                     # refuses --mem beside it).
#SBATCH --time=24:00:00                # wall-clock limit; the job checkpoints and requeues itself at the end
#SBATCH --output=logs/%x-%j.out       # stdout+stderr to logs/gemma-soo-JOBID.out (logs/ must exist)
#SBATCH --open-mode=append            # a requeued run appends to the same log instead of truncating it
#SBATCH --signal=B:USR1@600           # USR1 to the batch shell 600 s before the time limit: checkpoint and stop
#SBATCH --requeue                     # let Slurm (and this script) put the job back in the queue
# No --account here: pass it with `sbatch -A project_xxx` or the SBATCH_ACCOUNT environment variable.

set -uo pipefail
SOO_JOB_SCRIPT=submit_gemma_soo.sh
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
# shellcheck source=scripts/slurm_common.sh
if ! source scripts/slurm_common.sh 2>/dev/null; then
  echo "ERROR: scripts/slurm_common.sh not found in $PWD: submit from the repository root (where finetuning.py is)." | tee /dev/stderr
  exit 2
fi
soo_require_slurm_account   # before any work: no account, no job
soo_build_args              # config, DeepSpeed config and data files checked here, before modules and python
soo_setup_environment
soo_print_header "SOO fine-tuning (submit_gemma_soo.sh)" finetuning.py "${SOO_ARGS[@]}"

soo_srun "$SOO_PY" finetuning.py "${SOO_ARGS[@]}"
soo_finish "$?"
