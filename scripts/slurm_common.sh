# Shared logic of the Slurm job scripts submit_gemma_soo.sh and test/submit_gemma_soo_test.sh.
# Sourced (not run) by them from the submit directory, which must be the repository root.
# shellcheck shell=bash
#
# Environment overrides read here (all optional; see docs/guides/cluster.md):
#   SOO_CONFIG       YAML config for finetuning.py            (default configs/gemma-2-27b-it-v100.yaml)
#   SOO_DS_CONFIG    DeepSpeed JSON config, `none` = without   (default ds_config_stage3_offload.json)
#   SOO_DATA         -> --data_path        (unset: the config's)
#   SOO_EVAL_DATA    -> --eval_data_path   (unset: the config's)
#   SOO_OUTPUT_DIR   -> --output_dir       (unset: the config's; keep it the same across requeues)
#   SOO_EXTRA_ARGS   more finetuning.py flags, split on whitespace (no quoting)
#   SOO_PYTHON       the interpreter        (default .venv/bin/python if present, else python3)
#   SOO_MODULES      `module load $SOO_MODULES` first (default pytorch; empty = skip)
#   SOO_REQUEUE      1 (default): requeue the job when training checkpointed and stopped (exit 75)
#                    after USR1 (time limit near); never after TERM (scancel, preemption)
#   HF_HOME          Hugging Face cache     (default /scratch/$SLURM_JOB_ACCOUNT/$USER/hf-cache when /scratch exists)
#   HF_HUB_OFFLINE   default 1: compute nodes read weights fetched beforehand on a login node

soo_error() {
  echo "ERROR: $*" >&2
  echo "ERROR: $*"  # also in the job's stdout log, where people look first
}

# Fail at once, before any work, unless this is a Slurm batch job charged to an account.
soo_require_slurm_account() {
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    soo_error "this is a Slurm batch script: submit it with sbatch (see its header), do not run it with bash."
    exit 2
  fi
  if [ -z "${SLURM_JOB_ACCOUNT:-}" ]; then
    soo_error "no Slurm account (billing project) for job $SLURM_JOB_ID. Pass it at submission:
         sbatch -A project_xxx ${SOO_JOB_SCRIPT:-submit_gemma_soo.sh}
       or once per shell:  export SBATCH_ACCOUNT=project_xxx   (CSC: your project, see 'csc-projects')"
    exit 2
  fi
}

# Modules, interpreter, caches and the rendezvous address; sets SOO_PY (the interpreter to run).
soo_setup_environment() {
  if [ -n "${SOO_MODULES-pytorch}" ]; then
    if type module >/dev/null 2>&1; then
      # shellcheck disable=SC2086
      module load ${SOO_MODULES-pytorch} || { soo_error "module load ${SOO_MODULES-pytorch} failed (set SOO_MODULES='' to skip)."; exit 2; }
    else
      echo "note: no 'module' command on $(hostname -s); skipping 'module load ${SOO_MODULES-pytorch}'"
    fi
  fi
  if [ -n "${SOO_PYTHON:-}" ]; then
    SOO_PY="$SOO_PYTHON"
  elif [ -x .venv/bin/python ]; then
    SOO_PY=.venv/bin/python
  else
    SOO_PY=python3
  fi
  command -v "$SOO_PY" >/dev/null 2>&1 || { soo_error "python interpreter '$SOO_PY' not found (set SOO_PYTHON)."; exit 2; }
  # finetuning.py's exit code after a checkpoint on USR1/TERM, from its one definition (no torch import).
  SOO_PREEMPTED_EXIT_CODE="$("$SOO_PY" -c 'from soo.train import PREEMPTED_EXIT_CODE; print(PREEMPTED_EXIT_CODE)')" \
    || { soo_error "cannot import soo with $SOO_PY (run from the repository root)."; exit 2; }

  if [ -z "${HF_HOME:-}" ] && [ -d /scratch ]; then
    export HF_HOME="/scratch/$SLURM_JOB_ACCOUNT/${USER:-$(id -un)}/hf-cache"
  fi
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
  export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
  export PYTHONUNBUFFERED=1  # log lines appear in logs/ as they happen
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
  # torch.distributed rendezvous: rank 0 runs on the first host; a port derived from the job id,
  # in 15000-24999 (below Linux's ephemeral range), so two jobs sharing a node do not collide.
  MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
  export MASTER_ADDR
  export MASTER_PORT="${MASTER_PORT:-$((15000 + SLURM_JOB_ID % 10000))}"
}

# Common finetuning.py flags from the overrides, into the array SOO_ARGS.
soo_build_args() {
  # Defaults for Puhti's V100s: fp32 (no bf16 on V100) and ZeRO-3 with parameters and optimizer
  # offloaded to CPU RAM, the combination that fits one node (configs/gemma-2-27b-it-v100.yaml).
  local config="${SOO_CONFIG:-configs/gemma-2-27b-it-v100.yaml}" ds="${SOO_DS_CONFIG:-ds_config_stage3_offload.json}"
  [ -f "$config" ] || { soo_error "config '$config' not found in $PWD (set SOO_CONFIG)."; exit 2; }
  SOO_ARGS=(--config "$config")
  if [ "$ds" != none ]; then
    [ -f "$ds" ] || { soo_error "DeepSpeed config '$ds' not found in $PWD (set SOO_DS_CONFIG, or SOO_DS_CONFIG=none)."; exit 2; }
    SOO_ARGS+=(--deepspeed "$ds")
  fi
  if [ -n "${SOO_DATA:-}" ]; then
    [ -f "$SOO_DATA" ] || { soo_error "SOO_DATA='$SOO_DATA' is not a file (make one with generate_data.py)."; exit 2; }
    SOO_ARGS+=(--data_path "$SOO_DATA")
  fi
  if [ -n "${SOO_EVAL_DATA:-}" ]; then
    [ -f "$SOO_EVAL_DATA" ] || { soo_error "SOO_EVAL_DATA='$SOO_EVAL_DATA' is not a file."; exit 2; }
    SOO_ARGS+=(--eval_data_path "$SOO_EVAL_DATA")
  fi
  [ -n "${SOO_OUTPUT_DIR:-}" ] && SOO_ARGS+=(--output_dir "$SOO_OUTPUT_DIR")
  local extra=()
  read -r -a extra <<<"${SOO_EXTRA_ARGS:-}"
  SOO_ARGS+=("${extra[@]}")
  SOO_CONFIG_USED="$config"
  SOO_DS_USED="$ds"
}

soo_print_header() {  # soo_print_header TITLE PROGRAM ARGS...
  local commit title="$1"
  shift
  commit="$(git -C "$(dirname "$(readlink -f finetuning.py)")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ -n "$commit" ] && [ "$commit" != unknown ] && [ -n "$(git -C "$(dirname "$(readlink -f finetuning.py)")" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
  fi
  echo "================================================================================"
  echo "$title -- $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "  job          $SLURM_JOB_ID ($SLURM_JOB_NAME), account $SLURM_JOB_ACCOUNT, partition ${SLURM_JOB_PARTITION:-?}, restart #${SLURM_RESTART_COUNT:-0}"
  echo "  nodes        ${SLURM_JOB_NUM_NODES:-1}: $SLURM_JOB_NODELIST"
  echo "  tasks        ${SLURM_NTASKS:-1} (${SLURM_NTASKS_PER_NODE:-?} per node), ${SLURM_CPUS_PER_TASK:-1} CPUs each"
  echo "  GPUs/node    ${SLURM_GPUS_ON_NODE:-0} (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-})"
  echo "  config       $SOO_CONFIG_USED"
  echo "  deepspeed    $SOO_DS_USED"
  echo "  data         ${SOO_DATA:-(config)}; eval ${SOO_EVAL_DATA:-(config)}"
  echo "  output dir   ${SOO_OUTPUT_DIR:-(config)}"
  echo "  python       $SOO_PY ($("$SOO_PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo '?'))"
  echo "  git commit   $commit"
  echo "  submit dir   $PWD"
  echo "  HF_HOME      ${HF_HOME:-(default ~/.cache/huggingface)}, HF_HUB_OFFLINE=$HF_HUB_OFFLINE"
  echo "  rendezvous   $MASTER_ADDR:$MASTER_PORT"
  echo "  command      srun $SOO_PY $*"
  echo "================================================================================"
  if [ -n "${HF_HOME:-}" ] && [ ! -d "$HF_HOME" ] && [ "$HF_HUB_OFFLINE" = 1 ]; then
    echo "WARNING: HF_HOME=$HF_HOME does not exist and the hub is offline: a hub model id will not load."
    echo "         Fetch the weights on a login node first: HF_HOME=$HF_HOME hf download MODEL_ID"
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null || true; fi
}

# srun's flags for a training step, in one place (soo_srun; the sweep's SOO_SWEEP_TRAIN_LAUNCHER).
# srun of Slurm >= 22.05 does not inherit --cpus-per-task from sbatch: pass it on.
# Not --kill-on-bad-exit: exit 75 is "bad" to srun, and the rank that stops first would get
# the others killed while they finish (seen: the job then fails instead of requeueing).
# Instead --wait: once one task has ended, the others get 10 min, then they are killed (a
# crashed rank would otherwise leave the rest hanging in a collective until its timeout).
soo_srun_flags() {
  SOO_SRUN_FLAGS=(--kill-on-bad-exit=0 --wait=600 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}")
}

# Run "$@" in the background so the batch shell can catch signals: USR1 (sent by Slurm 10 min
# before the time limit, see --signal=B:USR1@600) and TERM (scancel, preemption) are forwarded to
# it as USR1; training then saves a checkpoint and exits with 75. Returns its exit code;
# SOO_LAST_SIGNAL says which signal the batch shell got (soo_finish requeues after USR1 only).
soo_run_forwarding_signals() {
  local pid rc
  "$@" &
  pid=$!
  SOO_LAST_SIGNAL=""
  # shellcheck disable=SC2064
  trap "SOO_LAST_SIGNAL=USR1; echo \"[\$(date +%T)] batch shell got USR1 (time limit near): asking training to checkpoint and stop\"; kill -USR1 $pid 2>/dev/null" USR1
  # shellcheck disable=SC2064
  trap "SOO_LAST_SIGNAL=TERM; echo \"[\$(date +%T)] batch shell got TERM (scancel or preemption): asking training to checkpoint and stop\"; kill -USR1 $pid 2>/dev/null" TERM
  while :; do
    wait "$pid"
    rc=$?
    # A trapped signal makes `wait` return early with a status > 128 while the child still runs.
    if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then
      continue
    fi
    if [ "$rc" -gt 128 ]; then
      # The child ended around the signal: fetch its real status if that wait was the interrupted one.
      wait "$pid" 2>/dev/null
      local again=$?
      [ "$again" -ne 127 ] && rc=$again
    fi
    break
  done
  trap - USR1
  # TERM is still recorded, not fatal, until the job script exits: on a node failure Slurm TERMs
  # this shell just after srun returned, and soo_finish must live to say the run did not finish.
  trap 'SOO_LAST_SIGNAL=TERM' TERM
  return "$rc"
}

# Run "$@" as one task per GPU with srun (which passes the forwarded USR1 on to every task).
# The next run in the same output dir resumes from the checkpoint.
soo_srun() {
  soo_srun_flags
  soo_run_forwarding_signals srun "${SOO_SRUN_FLAGS[@]}" "$@"
}

# True when slurmctld counts more restarts of this job than this run's: Slurm requeued the job
# while this run was still going (node failure, `scontrol requeue`).
soo_requeued_by_slurm() {
  local restarts="" attempt
  for attempt in 1 2; do  # a second try when the TERM of a node failure killed the first scontrol
    restarts="$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Restarts=[0-9]*' | head -n 1)"
    [ -n "$restarts" ] && break
  done
  restarts="${restarts#Restarts=}"
  [ -n "$restarts" ] && [ "$restarts" -gt "${SLURM_RESTART_COUNT:-0}" ]
}

# After soo_srun: report, requeue on preemption, and exit with the job's status.
# soo_finish RC [WHAT]: WHAT names the work in the messages (default: training).
soo_finish() {
  local rc="$1" what="${2:-training}"
  echo "================================================================================"
  if [ "$rc" -eq 0 ] && soo_requeued_by_slurm; then
    # srun of Slurm 22.05 exits 0 when its node fails ("srun: error: Node failure on NODE"), and
    # this shell may still run for a moment on a node Slurm has declared DOWN: exit 0 is then no
    # proof that the work ended. Slurm has requeued the job (--requeue); say so, not "finished".
    echo "[$(date +%T)] $what did NOT finish: Slurm ended this run (node failure) and requeued job" \
         "$SLURM_JOB_ID; the next run resumes from the last complete checkpoint."
    exit 1
  elif [ "$rc" -eq 0 ]; then
    echo "[$(date +%T)] $what finished (exit 0)."
  elif [ "$rc" -eq "$SOO_PREEMPTED_EXIT_CODE" ]; then
    if [ "${SOO_LAST_SIGNAL:-}" = TERM ]; then
      # scancel, or a preemption (Slurm itself requeues a preempted job when the site's mode is
      # REQUEUE): requeueing here would make `scancel` unable to stop the job.
      echo "[$(date +%T)] $what saved a checkpoint and stopped (exit $rc) after TERM: not requeueing." \
           "Resubmit with the same output dir to resume."
    elif [ "${SOO_REQUEUE:-1}" = 1 ]; then
      echo "[$(date +%T)] $what saved a checkpoint and stopped (exit $rc): requeueing job $SLURM_JOB_ID;" \
           "the next run resumes from the newest checkpoint in the same output dir."
      scontrol requeue "$SLURM_JOB_ID" || { soo_error "scontrol requeue $SLURM_JOB_ID failed; resubmit by hand (same SOO_OUTPUT_DIR) to resume."; }
    else
      echo "[$(date +%T)] $what saved a checkpoint and stopped (exit $rc); SOO_REQUEUE=0: not requeueing." \
           "Resubmit with the same output dir to resume."
    fi
  else
    echo "[$(date +%T)] $what FAILED (exit $rc); see the messages above."
  fi
  exit "$rc"
}
