#!/bin/bash
# Subliminal learning (subliminal.py, docs/subliminal.md "At 7B on Puhti") at Qwen2.5-7B-Instruct
# scale on CSC Puhti (V100-32GB, one GPU per job): three jobs chained with dependencies.
#   teachers  one GPU job: `generate` for the control teacher (no system prompt) and each --animal
#             teacher, their filtering, experiment.json, and the base model's evaluation
#   students  an array over seeds (index i -> the i-th seed): per seed and teacher one student,
#             `train` then `evaluate`, after the teachers job succeeded (afterok)
#   report    `subliminal.py report` on CPU once the students are done (afterany: the report
#             of whatever finished; a missing seed shows as "not decidable")
# Everything goes under SUBLIMINAL_OUTPUT_DIR in `subliminal.py run`'s layout (teachers/<t>/raw.jsonl,
# kept.jsonl, filter.json; students/<t>/seed<s>/ with student.json and eval.json; base/eval.json;
# experiment.json), so `subliminal.py report --output_dir` reads it.
#
# Submit all three from a login node, in the repository root (the weights fetched beforehand,
# compute nodes are offline):
#   HF_HOME=/scratch/project_xxx/$USER/hf-cache hf download Qwen/Qwen2.5-7B-Instruct
#   bash submit_subliminal.sh submit -A project_xxx            # prints the three job ids
#   SUBLIMINAL_DRY_RUN=1 bash submit_subliminal.sh submit -A project_xxx   # only print the sbatch lines
# Or one stage by hand (the same as `submit` does):
#   mkdir -p logs
#   sbatch -A project_xxx submit_subliminal.sh teachers
#   sbatch -A project_xxx --array=0-2 --output=logs/%x-%A_%a.out --dependency=afterok:JOBID submit_subliminal.sh students
#   sbatch -A project_xxx --partition=small --gres=none --cpus-per-task=1 --mem-per-cpu=4G --time=30 \
#     --dependency=afterany:ARRAYJOBID submit_subliminal.sh report
#
# Every stage is resumable: generation appends whole chunks (rerunning continues), a finished
# student (student.json) or evaluation (eval.json) is not redone. Slurm sends USR1 10 min before
# the time limit: the running step stops and the job requeues itself (SOO_REQUEUE=1, default) and
# continues; after TERM (scancel, preemption) it does not requeue: resubmit the same stage.
#
# The memory plan's verdict (one V100-32GB, fp16 weights; docs/subliminal.md):
#   student: micro-batch 22 does NOT fit (~51-72 GiB estimated, no activation checkpointing);
#            micro-batch 6 x accumulation 11 = 66 (the published 22 x 3) fits, ~27 GiB at 192 tokens;
#   teacher: 7B fp16 generation at batch 256 ~21 GiB (weights 14.2 GiB + KV cache + prefill).
# generate, train and evaluate run in fp16 on a V100 (soo.core.modeling.accelerator_dtype; no bf16
# there, fp32 does not fit): check the first job's keep rates and losses for overflow (nan).
#
# Environment overrides (defaults in brackets):
#   SUBLIMINAL_OUTPUT_DIR    [outputs/subliminal/qwen2.5-7b]   the experiment's folder
#   SUBLIMINAL_MODEL         [Qwen/Qwen2.5-7B-Instruct]        teacher and student initialisation
#   SUBLIMINAL_ANIMALS       [owl]                             trait teachers (the control is always run)
#   SUBLIMINAL_SEEDS         [0 1 2]                           student seeds; `submit` sets --array to match
#   SUBLIMINAL_N_PROMPTS     [30000]                           prompts per teacher
#   SUBLIMINAL_BACKEND       [hf]                              generation backend: hf, or vllm if installed
#   SUBLIMINAL_TEACHER_BATCH [256]                             prompts per chunk (fixes the sampling: keep it on resume)
#   SUBLIMINAL_STUDENT_BATCH [6]   SUBLIMINAL_ACCUMULATION [11]  micro-batch x accumulation = 66
#   SUBLIMINAL_DRY_RUN       [0]                               1: print the commands instead of running them
#   SOO_PYTHON, SOO_MODULES, SOO_REQUEUE, HF_HOME, HF_HUB_OFFLINE as in submit_gemma_soo.sh (scripts/slurm_common.sh)
# Logs: logs/soo-subliminal-JOBID.out (teachers, report), logs/soo-subliminal-ARRAYJOBID_INDEX.out (students).
#
#SBATCH --job-name=soo-subliminal     # name in squeue, and the %x of the log file name
#SBATCH --partition=gpu               # Puhti GPU partition (3 days max); gputest is for <=15 min tests
#SBATCH --nodes=1
#SBATCH --ntasks=1                    # one process: one model on one GPU
#SBATCH --cpus-per-task=10            # Puhti allows at most 10 cores per GPU
#SBATCH --gres=gpu:v100:1             # one V100-32GB (the memory plan above)
#SBATCH --mem-per-cpu=8G              # 80 GB: a 15 GB fp16 checkpoint is read through CPU RAM
#SBATCH --time=24:00:00               # teachers ~2-5 h for two teachers; a students task ~4-7 h for two (estimates, docs)
#SBATCH --output=logs/%x-%j.out       # students: sbatch --output=logs/%x-%A_%a.out (submit sets it)
#SBATCH --open-mode=append            # a requeued job appends to its log
#SBATCH --signal=B:USR1@600           # USR1 to this shell 600 s before the time limit: stop and requeue
#SBATCH --requeue
# No --account here: pass it with `sbatch -A project_xxx` or the SBATCH_ACCOUNT environment variable.

set -uo pipefail
SOO_JOB_SCRIPT="submit_subliminal.sh STAGE"
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
# shellcheck source=scripts/slurm_common.sh
if ! source scripts/slurm_common.sh 2>/dev/null; then
  echo "ERROR: scripts/slurm_common.sh not found in $PWD: submit from the repository root (where subliminal.py is)." | tee /dev/stderr
  exit 2
fi

stage="${1:-}"
root="${SUBLIMINAL_OUTPUT_DIR:-outputs/subliminal/qwen2.5-7b}"
model="${SUBLIMINAL_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
read -r -a animals <<<"${SUBLIMINAL_ANIMALS:-owl}"
read -r -a seeds <<<"${SUBLIMINAL_SEEDS:-0 1 2}"
teachers=(control "${animals[@]}")   # soo.subliminal.experiment.CONTROL first, as `run` orders them
n_prompts="${SUBLIMINAL_N_PROMPTS:-30000}"
prompt_seed=0
temperature=1.0
max_examples=10000
epochs=3
student_batch="${SUBLIMINAL_STUDENT_BATCH:-6}"
accumulation="${SUBLIMINAL_ACCUMULATION:-11}"
teacher_batch="${SUBLIMINAL_TEACHER_BATCH:-256}"
backend="${SUBLIMINAL_BACKEND:-hf}"
# Qwen's tokenizer splits numbers into digits: 10 three-digit numbers with ", " are 48 tokens, the
# embedded model's default (48) would cut the longest valid answers; 64 leaves room for [ ] and "."
max_new_tokens=64
samples_per_question=100
n_questions=50
dry_run="${SUBLIMINAL_DRY_RUN:-0}"

# The experiment as `subliminal.py run` flags: experiment.json is written from them, with run's
# own config class, so the report reads the same keys as after `subliminal.py run`.
run_flags=(--output_dir "$root" --model_name_or_path "$model" --animals "${animals[@]}" --seeds "${seeds[@]}"
  --n_prompts "$n_prompts" --prompt_seed "$prompt_seed" --temperature "$temperature"
  --teacher_batch_size "$teacher_batch" --max_examples "$max_examples" --epochs "$epochs"
  --student_batch_size "$student_batch" --samples_per_question "$samples_per_question" --n_questions "$n_questions")
# experiment.json, then each teacher's filter exactly as `run` does it (kept.jsonl uncapped,
# kept.rejected.jsonl, filter.json for the report's keep-rate table); a filtered teacher is kept.
experiment_py='import sys
from dataclasses import asdict
from soo.core.cli import config_from
from soo.core.io import write_json_atomic
from soo.subliminal.experiment import SubliminalExperimentConfig, stages_of
from soo.subliminal.pipeline import filter_teacher
import subliminal
config = config_from(SubliminalExperimentConfig, subliminal.build_parser().parse_args(["run", *sys.argv[2:]]))
if sys.argv[1] == "config":
    write_json_atomic(config.root / "experiment.json", asdict(config))
else:
    stages = stages_of(config)
    for teacher in config.teachers:
        if not stages.kept_file(teacher).is_file():
            filter_teacher(stages, teacher, config.n_prompts)'

# Print a command (dry run) or run it with USR1/TERM forwarded; stop the job on a failure.
step() {
  echo "+ $(printf '%q ' "$@")"
  [ "$dry_run" = 1 ] && return 0
  soo_run_forwarding_signals "$@"
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  if [ "${SOO_LAST_SIGNAL:-}" = USR1 ] && [ "${SOO_REQUEUE:-1}" = 1 ]; then
    echo "[$(date +%T)] time limit near: requeueing job $SLURM_JOB_ID; the next run continues where this one stopped."
    scontrol requeue "$SLURM_JOB_ID" || soo_error "scontrol requeue $SLURM_JOB_ID failed; resubmit this stage by hand."
  elif [ -n "${SOO_LAST_SIGNAL:-}" ]; then
    echo "[$(date +%T)] stopped by $SOO_LAST_SIGNAL (exit $rc): not requeueing; resubmit this stage to continue."
  else
    echo "[$(date +%T)] FAILED (exit $rc): $*"
  fi
  exit "$rc"
}

# sbatch --parsable "$@", the job id on stdout; a dry run prints the line (stderr) and a stand-in id.
submit_job() {
  if [ "$dry_run" = 1 ]; then
    echo "sbatch --parsable $*" >&2
    echo "${*: -1}-job"
    return 0
  fi
  local id
  id="$(sbatch --parsable "$@")" || { soo_error "sbatch $* failed"; return 2; }
  echo "${id%%;*}"  # "jobid;cluster" on a multi-cluster site
}

submit_all() {  # outside Slurm: the three jobs with their dependencies; "$@" goes to every sbatch
  local teachers_job students_job array="--array=0-$(( ${#seeds[@]} - 1 ))"
  mkdir -p logs
  teachers_job="$(submit_job "$@" submit_subliminal.sh teachers)" || exit 2
  students_job="$(submit_job "$@" "$array" --output=logs/%x-%A_%a.out --dependency="afterok:$teachers_job" \
    --kill-on-invalid-dep=yes submit_subliminal.sh students)" || exit 2
  # The report on CPU; --mem-per-cpu, not --mem: sbatch refuses both, and the #SBATCH lines set the former.
  submit_job "$@" --partition=small --gres=none --cpus-per-task=1 --mem-per-cpu=4G --time=30 \
    --dependency="afterany:$students_job" --kill-on-invalid-dep=yes submit_subliminal.sh report >/dev/null || exit 2
  if [ "$dry_run" = 1 ]; then
    echo "dry run: nothing submitted (the sbatch lines are above)"
    return 0
  fi
  echo "submitted: teachers $teachers_job, students $students_job (${array#--} over seeds ${seeds[*]}), report after them"
  echo "results: $root (report in $root/report)"
}

if [ "$stage" = submit ]; then
  shift
  submit_all "$@"
  exit 0
fi
case "$stage" in
  teachers | students | report) ;;
  *)
    soo_error "the stage '${stage}' is not one of teachers, students, report: bash submit_subliminal.sh submit -A ACCOUNT (all three)."
    exit 2
    ;;
esac
if [ "$dry_run" = 1 ]; then
  SOO_PY="${SOO_PYTHON:-python3}"
else
  soo_require_slurm_account   # before any work: no account, no job
  soo_setup_environment       # modules, interpreter (SOO_PY), caches
fi
echo "================================================================================"
echo "subliminal $stage -- job ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-none}}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID} on $(hostname -s), $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "  model $model; teachers ${teachers[*]}; seeds ${seeds[*]}; output $root; restart #${SLURM_RESTART_COUNT:-0}"
echo "================================================================================"
if command -v nvidia-smi >/dev/null 2>&1 && [ "$dry_run" != 1 ]; then nvidia-smi -L 2>/dev/null || true; fi
eval_flags=(--model_name_or_path "$model" --animals "${animals[@]}" --samples_per_question "$samples_per_question"
  --n_questions "$n_questions" --no_progress)

if [ "$stage" = teachers ]; then
  step "$SOO_PY" -c "$experiment_py" config "${run_flags[@]}"
  for teacher in "${teachers[@]}"; do
    trait=()
    [ "$teacher" != control ] && trait=(--animal "$teacher")
    step "$SOO_PY" subliminal.py generate --output_file "$root/teachers/$teacher/raw.jsonl" --model_name_or_path "$model" \
      "${trait[@]}" --n_prompts "$n_prompts" --seed "$prompt_seed" --temperature "$temperature" \
      --batch_size "$teacher_batch" --max_new_tokens "$max_new_tokens" --backend "$backend" --no_progress
  done
  step "$SOO_PY" -c "$experiment_py" filter "${run_flags[@]}"
  if [ ! -f "$root/base/eval.json" ]; then
    step "$SOO_PY" subliminal.py evaluate "${eval_flags[@]}" --output_file "$root/base/eval.json"
  fi
elif [ "$stage" = students ]; then
  index="${SLURM_ARRAY_TASK_ID:-}"
  if [ -z "$index" ] || [ "$index" -ge "${#seeds[@]}" ]; then
    soo_error "students is an array job over the ${#seeds[@]} seeds (${seeds[*]}): sbatch --array=0-$(( ${#seeds[@]} - 1 )) ... (got index '${index}')"
    exit 2
  fi
  seed="${seeds[$index]}"
  # Every student trains on the same number of examples: the smallest teacher's kept count, at
  # most max_examples (as `run` does), so trait and control students differ only in the teacher.
  n_examples="$max_examples"
  for teacher in "${teachers[@]}"; do
    kept="$root/teachers/$teacher/kept.jsonl"
    [ -f "$kept" ] || { soo_error "$kept missing: the teachers job has not finished."; exit 2; }
    count="$(grep -c . "$kept")"
    [ "$count" -lt "$n_examples" ] && n_examples="$count"
  done
  [ "$n_examples" -gt 0 ] || { soo_error "a teacher kept no examples; see its filter.json"; exit 2; }
  echo "seed $seed: every student trains on the first $n_examples kept examples"
  for teacher in "${teachers[@]}"; do
    folder="$root/students/$teacher/seed$seed"
    if [ ! -f "$folder/student.json" ]; then
      step "$SOO_PY" subliminal.py train --train_file "$root/teachers/$teacher/kept.jsonl" --output_dir "$folder" \
        --model_name_or_path "$model" --max_examples "$n_examples" --epochs "$epochs" --batch_size "$student_batch" \
        --gradient_accumulation_steps "$accumulation" --seed "$seed" --no_progress
    fi
    if [ ! -f "$folder/eval.json" ]; then
      step "$SOO_PY" subliminal.py evaluate "${eval_flags[@]}" --adapter "$folder" --output_file "$folder/eval.json"
    fi
  done
else
  step "$SOO_PY" subliminal.py report --output_dir "$root" --report_dir "$root/report"
fi
echo "[$(date +%T)] subliminal $stage finished."
