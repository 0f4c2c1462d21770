#!/usr/bin/env bash
# Set up the environment if needed, then run the test suite (offline, CPU, a few minutes).
# Extra arguments go to pytest (e.g. -k capture, -x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
python=".venv/bin/python"
[ -n "${SOO_VENV:-}" ] && python="$SOO_VENV/bin/python"
HF_HUB_OFFLINE=1 exec "$python" -m pytest "$@"
