#!/usr/bin/env bash
# Lint and format check (ruff; settings in pyproject.toml). Fails on any finding.
# To fix what ruff can fix itself: .venv/bin/ruff check --fix . && .venv/bin/ruff format .
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
ruff=".venv/bin/ruff"
[ -n "${SOO_VENV:-}" ] && ruff="$SOO_VENV/bin/ruff"
"$ruff" check .
"$ruff" format --check .
