#!/bin/bash
# SOO in RL (rl_deception.py): one training seed per Slurm array task, CPU only (1 core, ~0.5 GB).
# One seed takes 14-33 min on one core of a 2-core box (docs/guides/rl.md#compute-per-seed); Puhti's CPU partition `small` is enough.
#
# Submit from the repository root (logs/ must exist; sbatch does not create it), then the report
# once every seed has finished:
#   mkdir -p logs
#   sbatch -A project_xxx --array=0-9 submit_rl_deception.sh           # seeds 0..9
#   sbatch -A project_xxx --dependency=afterok:JOBID --partition=small --time=10 --mem=2G \
#     --wrap ".venv/bin/python rl_deception.py report --output_dir results/rl"
# A rerun of a seed reuses its finished stages (checkpoints in results/rl/seed_N/), so a task that
# hit the time limit picks up where it stopped when resubmitted.
#
# The SOO classifier over 1500 independently trained pairs (the paper's co-trained protocol, baselines only, basic task, both SOO definitions):
#   SOO_RL_ARGS="--classifier_only --variants basic --protocol co-trained --soo_definitions authors masked" sbatch -A project_xxx --array=0-749 submit_rl_deception.sh
#   SOO_RL_ARGS="--classifier_only --variants basic --protocol co-trained --soo_definitions authors masked" SOO_RL_SEED_OFFSET=750 sbatch -A project_xxx --array=0-749 submit_rl_deception.sh
#
# Environment overrides: SOO_RL_OUT_DIR [results/rl], SOO_RL_ARGS [none; more `run` flags, e.g.
# "--quick" or "--variants basic"], SOO_RL_SEED_OFFSET [0; added to the array index], SOO_PYTHON [.venv/bin/python or python3], SOO_MODULES
# [pytorch; empty = no module load]. Log: logs/soo-rl-ARRAYJOBID_SEED.out.
#
#SBATCH --job-name=soo-rl             # name in squeue, and the %x of the log file name
#SBATCH --partition=small             # Puhti's CPU partition for jobs within one node
#SBATCH --ntasks=1                    # one process per seed
#SBATCH --cpus-per-task=1             # 64-unit networks: one thread is fastest (rl_deception.py sets it)
#SBATCH --mem=2G                      # measured peak ~0.4 GB RSS per seed
#SBATCH --time=01:00:00               # 14-33 min per seed on this repo's 2-core test box; margin for slower cores
#SBATCH --array=0-3                   # seeds; override with sbatch --array=...
#SBATCH --output=logs/%x-%A_%a.out    # logs/soo-rl-ARRAYJOBID_SEED.out (logs/ must exist)
# No --account here: pass it with `sbatch -A project_xxx` or the SBATCH_ACCOUNT environment variable.

set -uo pipefail
SOO_JOB_SCRIPT=submit_rl_deception.sh
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
# shellcheck source=scripts/slurm_common.sh
if ! source scripts/slurm_common.sh 2>/dev/null; then
  echo "ERROR: scripts/slurm_common.sh not found in $PWD: submit from the repository root (where rl_deception.py is)." | tee /dev/stderr
  exit 2
fi
soo_require_slurm_account   # before any work: no account, no job
soo_setup_environment       # modules, interpreter (SOO_PY)

# Seed = array index + SOO_RL_SEED_OFFSET: more seeds than one array may hold (Slurm's default
# MaxArraySize is 1001) go in several arrays, e.g. --array=0-749 with offsets 0 and 750.
seed=$(( ${SLURM_ARRAY_TASK_ID:-0} + ${SOO_RL_SEED_OFFSET:-0} ))
extra=()
read -r -a extra <<<"${SOO_RL_ARGS:-}"
echo "SOO RL seed $seed -- job ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_$seed on $(hostname -s), $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "command: $SOO_PY rl_deception.py run --seed $seed --no_progress --output_dir ${SOO_RL_OUT_DIR:-results/rl} ${extra[*]}"
"$SOO_PY" rl_deception.py run --seed "$seed" --no_progress --output_dir "${SOO_RL_OUT_DIR:-results/rl}" "${extra[@]}"
rc=$?
echo "[$(date +%T)] seed $seed finished (exit $rc)"
exit "$rc"
