#!/bin/bash
# Short test job (<= 15 min, gputest partition): test/finetuning_test.py runs 5 steps of SOO
# fine-tuning with the real job's config and DeepSpeed config (Gemma-2-27b-it on V100: fp32,
# ZeRO-3 with CPU offload) on the 10 pairs of test/soo_finetuning_data10.jsonl
# and checks that the LoRA adapter was saved. Run it before the long job to catch setup problems
# (account, modules, weights in HF_HOME, DeepSpeed, rendezvous) in minutes instead of after a queue.
#
# Why 4 GPUs and not 1: the real run needs all 4 (Gemma-2-27B is ~101 GiB in fp32; ZeRO-3 splits
# the GPU work over the node's 4 V100), and the point of the test is the same one-task-per-GPU
# launch, rendezvous and memory as the real job. For a smaller model one GPU is enough:
#   sbatch -A project_xxx --gres=gpu:v100:1 --ntasks-per-node=1 test/submit_gemma_soo_test.sh   (80 GB RAM)
#
# Submit from the repository root (logs/ must exist; sbatch does not create it):
#   mkdir -p logs && sbatch -A project_xxx test/submit_gemma_soo_test.sh
# Same environment overrides as submit_gemma_soo.sh (SOO_CONFIG, SOO_DS_CONFIG, SOO_DATA,
# SOO_EVAL_DATA, SOO_OUTPUT_DIR [default outputs/soo-test-run], SOO_EXTRA_ARGS, SOO_PYTHON,
# SOO_MODULES, SOO_REQUEUE [default 0 here], HF_HOME, HF_HUB_OFFLINE). On a CPU-only box, e.g.
# the local cluster of scripts/slurm_local.sh, with a tiny random model:
#   python -m soo.tools.tiny_model /tmp/tiny --arch gemma2
#   SOO_DS_CONFIG=none SOO_EXTRA_ARGS="--model_name_or_path /tmp/tiny --use_cpu --dtype float32 --bf16 false --soo_layers 1" \
#     sbatch -A test --ntasks-per-node=1 --cpus-per-task=1 test/submit_gemma_soo_test.sh
#
#SBATCH --job-name=gemma-soo-test     # name in squeue, and the %x of the log file name
#SBATCH --partition=gputest           # Puhti's test partition: 15 min max, short queue
#SBATCH --nodes=1                     # one node
#SBATCH --ntasks-per-node=4           # one process per GPU, as in the real job
#SBATCH --cpus-per-task=10            # Puhti allows at most 10 cores per GPU
#SBATCH --gres=gpu:v100:4             # the node's 4 V100, as the real job
#SBATCH --mem-per-cpu=8G              # as the real job: 320 GB per node (the offloaded fp32 weights live in
#                                     # RAM); per CPU, so overrides of CPUs and tasks scale it
#SBATCH --time=00:15:00               # gputest's limit
#SBATCH --output=logs/%x-%j.out       # logs/gemma-soo-test-JOBID.out (logs/ must exist)
#SBATCH --open-mode=append            # keep the log of an earlier run of a requeued job
#SBATCH --signal=B:USR1@120           # USR1 to the batch shell 2 min before the limit: checkpoint and stop
# No --account here: pass it with `sbatch -A project_xxx` or the SBATCH_ACCOUNT environment variable.

set -uo pipefail
SOO_JOB_SCRIPT=test/submit_gemma_soo_test.sh
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
# shellcheck source=scripts/slurm_common.sh
if ! source scripts/slurm_common.sh 2>/dev/null; then
  echo "ERROR: scripts/slurm_common.sh not found in $PWD: submit from the repository root (where finetuning.py is)." | tee /dev/stderr
  exit 2
fi
soo_require_slurm_account   # before any work: no account, no job
export SOO_OUTPUT_DIR="${SOO_OUTPUT_DIR:-outputs/soo-test-run}"
export SOO_REQUEUE="${SOO_REQUEUE:-0}"  # a test job should report, not loop
export SOO_DATA="${SOO_DATA:-test/soo_finetuning_data10.jsonl}"       # finetuning_test.py's defaults too,
export SOO_EVAL_DATA="${SOO_EVAL_DATA:-test/soo_finetuning_data10.jsonl}"  # named here for the log header
soo_build_args
soo_setup_environment
soo_print_header "SOO short test job (test/submit_gemma_soo_test.sh)" test/finetuning_test.py "${SOO_ARGS[@]}"

soo_srun "$SOO_PY" test/finetuning_test.py "${SOO_ARGS[@]}"
soo_finish "$?"
