#!/bin/bash
# A sweep (sweep.py) on Slurm: one array task per cell, each `sweep.py run-cell SPEC --index N`
# (train with srun, one process per GPU -> evaluate). Submit it through sweep.py, which puts the
# indices of the cells not done yet into --array and throttles them (%K), from the repository root:
#   python sweep.py submit configs/sweeps/smollm2-layers.yaml --throttle 4 -- -A project_xxx
#   python sweep.py status configs/sweeps/smollm2-layers.yaml      # while it runs, and after
#   python sweep.py report configs/sweeps/smollm2-layers.yaml      # when the cells are done
# By hand (the same thing for a fresh sweep of 18 cells):
#   mkdir -p logs && sbatch -A project_xxx --array=0-17%4 submit_sweep.sh configs/sweeps/smollm2-layers.yaml
# Resubmitting (the same `submit` command) skips done cells, resumes preempted ones from their last
# checkpoint and reruns failed ones; every cell's log is OUTPUT_DIR/CELL/cell.log.
#
# Defaults: one V100 per cell (the embedded model and models up to a few B parameters). Gemma-2-27b
# needs a whole node per cell, as in submit_gemma_soo.sh (docs/guides/cluster.md):
#   python sweep.py submit configs/sweeps/gemma-2-27b-it-layers.yaml --throttle 2 -- -A project_xxx \
#     --ntasks-per-node=4 --gres=gpu:v100:4 --time=3-00:00:00
#
# Time limit: Slurm sends USR1 to this shell 10 min before the limit; it reaches training (as USR1,
# through sweep.py and srun), which checkpoints and exits 75; the cell is left preempted and the
# task requeues itself, resuming from the checkpoint. TERM (scancel, preemption) checkpoints but
# does not requeue: resubmit to resume. Environment overrides as in submit_gemma_soo.sh: SOO_PYTHON,
# SOO_MODULES, SOO_REQUEUE, HF_HOME, HF_HUB_OFFLINE (scripts/slurm_common.sh).
# Log: logs/soo-sweep-ARRAYJOBID_INDEX.out.
#
#SBATCH --job-name=soo-sweep          # name in squeue, and the %x of the log file name
#SBATCH --partition=gpu               # Puhti GPU partition (3 days max); gputest is for <=15 min tests
#SBATCH --nodes=1                     # a cell never spans nodes
#SBATCH --ntasks-per-node=1           # training processes per cell (srun), one per GPU; 4 for Gemma-2-27b
#SBATCH --cpus-per-task=10            # Puhti allows at most 10 cores per GPU
#SBATCH --gres=gpu:v100:1             # GPUs per cell; --gres=gpu:v100:4 with --ntasks-per-node=4
#SBATCH --mem-per-cpu=8G              # 80 GB per one-GPU cell (a whole node's 320 GB with 4 tasks, as the main job)
#SBATCH --time=24:00:00               # per cell; a cell that hits it checkpoints and requeues itself
#SBATCH --output=logs/%x-%A_%a.out    # logs/soo-sweep-ARRAYJOBID_INDEX.out (logs/ must exist; sweep.py submit makes it)
#SBATCH --open-mode=append            # a requeued task appends to its log
#SBATCH --signal=B:USR1@600           # USR1 to this shell 600 s before the time limit: checkpoint and stop
#SBATCH --requeue
# No --account here: pass it with `sbatch -A project_xxx` (after -- in sweep.py submit) or SBATCH_ACCOUNT.

set -uo pipefail
SOO_JOB_SCRIPT="submit_sweep.sh SPEC"
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
# shellcheck source=scripts/slurm_common.sh
if ! source scripts/slurm_common.sh 2>/dev/null; then
  echo "ERROR: scripts/slurm_common.sh not found in $PWD: submit from the repository root (where sweep.py is)." | tee /dev/stderr
  exit 2
fi
soo_require_slurm_account   # before any work: no account, no job
spec="${1:-}"
if [ -z "$spec" ] || [ ! -f "$spec" ]; then
  soo_error "the sweep spec '${spec}' is not a file: sbatch ... submit_sweep.sh SPEC.yaml (or python sweep.py submit SPEC.yaml)."
  exit 2
fi
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  soo_error "not an array job: the array index is the cell. Submit with: python sweep.py submit $spec -- -A ACCOUNT"
  exit 2
fi
soo_setup_environment       # modules, interpreter (SOO_PY), caches, rendezvous
soo_srun_flags
export SOO_SWEEP_TRAIN_LAUNCHER="srun ${SOO_SRUN_FLAGS[*]}"   # read by soo.sweep.run: training through srun

index="$SLURM_ARRAY_TASK_ID"
echo "================================================================================"
echo "SOO sweep cell $index of $spec -- job ${SLURM_ARRAY_JOB_ID}_${index} ($SLURM_JOB_ID), $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "  account $SLURM_JOB_ACCOUNT, partition ${SLURM_JOB_PARTITION:-?}, node $(hostname -s), restart #${SLURM_RESTART_COUNT:-0}"
echo "  tasks ${SLURM_NTASKS:-1}, ${SLURM_CPUS_PER_TASK:-1} CPUs each, GPUs ${SLURM_GPUS_ON_NODE:-0}; python $SOO_PY"
echo "  training launcher: $SOO_SWEEP_TRAIN_LAUNCHER"
echo "  command: $SOO_PY sweep.py run-cell $spec --index $index"
echo "================================================================================"
soo_run_forwarding_signals "$SOO_PY" sweep.py run-cell "$spec" --index "$index"
soo_finish "$?" "cell $index"
