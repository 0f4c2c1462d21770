#!/usr/bin/env bash
# The one-shot GPU check (benchmarks/gpu_check.py) on a GPU machine without internet.
#
#   bash benchmarks/gpu_check.sh prepare   # HERE, where PyPI is reachable: download the wheels the GPU
#                                          # machine may lack into benchmarks/gpu_wheels/ (~58 MB)
#   bash benchmarks/gpu_check.sh [ARGS]    # THERE, in a copy of this repo that holds benchmarks/gpu_wheels/:
#                                          # installs the wheels into a private folder (its own Python and
#                                          # torch stay), runs `python -m benchmarks.gpu_check ARGS`
#
# The wheels: transformers and peft at the versions this repo was tested with (requirements.txt),
# regex (transformers checks its version on import) and bitsandbytes (the 4-bit QLoRA step; the check
# skips that step without it). They are pure Python or manylinux x86-64 builds for CPython
# SOO_GPU_PYTHON (default 3.12: say the GPU machine's `python3 --version` if it differs).
# Settings: SOO_GPU_WHEELS (default benchmarks/gpu_wheels), SOO_GPU_SITE (default /tmp/soo-gpu-site),
# PYTHON (default python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="${SOO_GPU_WHEELS:-$repo/benchmarks/gpu_wheels}"
site="${SOO_GPU_SITE:-/tmp/soo-gpu-site}"
python="${PYTHON:-python3}"
# Tested versions (requirements.txt's header); bitsandbytes: any release with CUDA 12/13 builds.
pins=(transformers==5.24.0 peft==0.21.2 regex bitsandbytes)

if [[ "${1:-}" == "prepare" ]]; then
    shift
    version="${SOO_GPU_PYTHON:-3.12}"
    mkdir -p "$wheels"
    platforms=()
    for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${tag}_x86_64")
    done
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp "${platforms[@]}" -d "$wheels" "${pins[@]}" "$@"
    echo "wheels for CPython $version in $wheels:"
    ls -1 "$wheels"
    exit 0
fi

cd "$repo"
if compgen -G "$wheels/*.whl" > /dev/null; then
    # --no-deps: everything else (torch, accelerate, tokenizers, ...) is the machine's own.
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheels in $wheels: using the machine's own packages (run 'bash benchmarks/gpu_check.sh prepare' where PyPI is reachable)" >&2
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$python" -m benchmarks.gpu_check "$@"
