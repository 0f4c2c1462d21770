"""Short SOO fine-tuning test run: a few steps on 10 pairs, then check that the adapter was saved.

Not a pytest module (pyproject.toml has pytest collect test_*.py only): a launcher for the short test job
test/submit_gemma_soo_test.sh, and for trying a setup by hand before a long run. It calls
finetuning.py's main with

    --config configs/gemma-2-27b-it-v100.yaml     (or $SOO_CONFIG, or a --config you pass)
    --data_path test/soo_finetuning_data10.jsonl --eval_data_path test/soo_finetuning_data10.jsonl
    --max_steps 5 --save_strategy no --logging_steps 1 --report_to none --disable_tqdm true
    --output_dir outputs/soo-test-run

followed by your own arguments, which win over these (any finetuning.py / TrainingArguments flag).
The last line printed says whether the adapter was saved; the exit code is finetuning.py's, or 1
when it returned 0 but no adapter is on disk.

Examples (from the repository root):

    # CPU, tiny random Gemma-2 (no download, ~30 s):
    python -m soo.tools.tiny_model /tmp/tiny-gemma2 --arch gemma2
    python test/finetuning_test.py --model_name_or_path /tmp/tiny-gemma2 --use_cpu --dtype float32 \\
        --bf16 false --soo_layers 1

    # the real model on one V100 node (4 GPUs, ZeRO-3 with CPU offload), outside Slurm:
    torchrun --nproc_per_node 4 test/finetuning_test.py --deepspeed ds_config_stage3_offload.json

    # as a Slurm job (what test/submit_gemma_soo_test.sh runs, one task per GPU):
    mkdir -p logs && sbatch -A project_xxx test/submit_gemma_soo_test.sh

The held-out SOO measurement uses the same 10 pairs (only to exercise the code path: they are not
held out). The data file was made with `python generate_data.py --n 10 --seed 0
--output_file test/soo_finetuning_data10.jsonl`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DATA = "test/soo_finetuning_data10.jsonl"
DEFAULT_OUTPUT_DIR = "outputs/soo-test-run"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def _has_flag(argv: list[str], name: str) -> bool:
    return any(arg == name or arg.startswith(name + "=") for arg in argv)


def _last_value(argv: list[str], name: str, default: str) -> str:
    value = default
    for position, arg in enumerate(argv):
        if arg == name and position + 1 < len(argv):
            value = argv[position + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def build_argv(extra: list[str]) -> list[str]:
    """The test run's finetuning.py arguments; `extra` comes last and so overrides the defaults."""
    argv = []
    if not _has_flag(extra, "--config"):  # finetuning.py takes one --config only
        argv += ["--config", os.environ.get("SOO_CONFIG", "configs/gemma-2-27b-it-v100.yaml")]
    argv += [
        "--data_path",
        DATA,
        "--eval_data_path",
        DATA,
        "--max_steps",
        "5",
        "--save_strategy",
        "no",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--output_dir",
        DEFAULT_OUTPUT_DIR,
    ]
    return argv + list(extra)


def _is_rank_zero() -> bool:
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return rank == "0"


def main(extra: list[str] | None = None) -> int:
    os.chdir(REPO_ROOT)  # the config and data paths are relative to the repository root
    import finetuning

    argv = build_argv(sys.argv[1:] if extra is None else extra)
    output_dir = Path(_last_value(argv, "--output_dir", DEFAULT_OUTPUT_DIR))
    if _is_rank_zero():
        print("finetuning_test: finetuning.py " + " ".join(argv), flush=True)
    code = finetuning.main(argv)
    if not _is_rank_zero():
        return code
    missing = [name for name in ADAPTER_FILES if not (output_dir / name).is_file()]
    if code != 0:
        print(f"finetuning_test: FAILED: finetuning.py exited with {code}; output dir {output_dir}", flush=True)
        return code
    if missing:
        print(
            f"finetuning_test: FAILED: training returned 0 but {', '.join(missing)} missing in {output_dir}", flush=True
        )
        return 1
    print(f"finetuning_test: OK: adapter saved to {output_dir.resolve()} ({', '.join(ADAPTER_FILES)})", flush=True)
    return 0


if __name__ == "__main__":
    from soo.train.distributed import exit_process

    exit_process(main())
