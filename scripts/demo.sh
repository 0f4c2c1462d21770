#!/usr/bin/env bash
# The main job on a laptop CPU: set up the environment, generate training and held-out pairs,
# SOO fine-tune the embedded SmolLM2-135M-Instruct, print held-out SOO before and after.
# Extra arguments go to finetuning.py (e.g. --max_steps 20, --soo_token_mode last).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
python=".venv/bin/python"
[ -n "${SOO_VENV:-}" ] && python="$SOO_VENV/bin/python"
"$python" generate_data.py --split train --n 1000 --seed 0 --output_file data/soo_train.jsonl
"$python" generate_data.py --split test --n 200 --seed 0 --output_file data/soo_test.jsonl
"$python" finetuning.py --config configs/smollm2-135m-instruct.yaml "$@"
