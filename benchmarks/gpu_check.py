"""One-shot GPU check: SOO LoRA training in bf16, fp16 and 4-bit, the fp16 overflow guard, and
batched generation/scoring throughput, on random-weight models of real configs; one markdown report.

Prepare here (needs PyPI), then run on the GPU machine (needs no network):

    bash benchmarks/gpu_check.sh prepare     # wheels the GPU machine may lack -> benchmarks/gpu_wheels/
    bash benchmarks/gpu_check.sh             # there: ~3-5 min on one H200; report -> results/benchmarks/gpu.md
    bash benchmarks/gpu_check.sh --sections training --models llama-1b --output_file /tmp/gpu.md   # one part

A dry run of every section on tiny models, on a CPU (what the test suite runs):

    python -m benchmarks.gpu_check --dry_run --output_file /tmp/gpu-dry.md

Models (architecture configs bundled in soo/tools/model_configs, weights random, no download):
gemma2-2b = google/gemma-2-2b-it (2.61 B parameters), llama-1b = meta-llama/Llama-3.2-1B-Instruct
(1.24 B). Random weights give the real shapes, so the real cost, but not trained activations.

Sections:
  environment  GPU, driver, library versions; a bf16 8192^3 matmul's TFLOP/s (the measured ceiling)
  training     per model and precision (bf16, fp16): SOOTrainer with finetuning.py's defaults (LM + SOO
               at the middle layer's self_attn.o_proj, LoRA r 8 on q_proj/v_proj, AdamW) for
               --warmup_steps + --steps steps on synthetic pairs of --seq_len tokens, --micro_batch pairs
               (2x rows) per step. Reports tokens/s, MFU (FLOPs counted by torch's FlopCounterMode on one
               step / step time / the GPU's dense bf16 peak), peak memory against soo.tools.memory's estimate
               for the same settings. On Gemma-2 it also checks the fp16 guard: finetuning.py's warning,
               and one step with an activation outlier injected (the SOO layer's o_proj output x 1e6):
               fp16 overflows and the trainer must stop with NonFiniteLossError; bf16 must stay finite.
  qlora        the same training on llama-1b loaded in 4-bit NF4 (bitsandbytes), when it imports
  generation   greedy generation of the main scenario's prompts: one at a time vs batched (llama-1b, bf16)
  scoring      forced-choice scoring of the whole protocol (every scenario, both orders, --score_n)
  evaluate     evaluate.py's engine end to end (tiny model + adapter): does it run on the GPU?

Each section is written to the report as soon as it ends, so a run cut short keeps what it measured.
A section that fails is reported as FAILED with its error and the others still run (exit status 1).
This file is the command line and the dispatcher; the sections live in benchmarks/gpu/ (see its map).
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback

import torch

from benchmarks._cli import GPU_REPORT, check_output_file, fail, positive_int
from benchmarks.gpu.context import Check, Report
from benchmarks.gpu.device import datasheet_peak_tflops, library_versions, release
from benchmarks.gpu.models import MODELS
from benchmarks.gpu.sections import run_environment, run_evaluate, run_generation, run_scoring
from benchmarks.gpu.training import PRECISIONS, run_qlora, run_training
from soo.core.cli import CommandParser

# The registry: --sections names, in the default order. The environment section comes first because
# it measures the matmul peak that the training sections' table compares with.
SECTIONS = {
    "environment": run_environment,
    "training": run_training,
    "qlora": run_qlora,
    "generation": run_generation,
    "scoring": run_scoring,
    "evaluate": run_evaluate,
}


def parse_args(argv: list[str] | None):
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_file", default=GPU_REPORT, help=f"markdown report, replaced (default {GPU_REPORT}; empty to skip)"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        default=list(SECTIONS),
        metavar="SECTION",
        help=f"what to run (default all): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        metavar="MODEL",
        help=f"training models (default both): {', '.join(MODELS)}",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=list(PRECISIONS),
        metavar="PRECISION",
        help="training precisions (default: bf16 fp16)",
    )
    parser.add_argument("--steps", type=positive_int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup_steps", type=positive_int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--micro_batch", type=positive_int, default=8, help="pairs per step (default 8)")
    parser.add_argument(
        "--seq_len", type=positive_int, default=256, help="tokens per row (default 256, finetuning.py's --max_length)"
    )
    parser.add_argument("--gen_n", type=positive_int, default=256, help="prompts generated batched (default 256)")
    parser.add_argument(
        "--gen_sequential_n", type=positive_int, default=16, help="of those, generated one at a time too (default 16)"
    )
    parser.add_argument(
        "--gen_batch_sizes",
        type=positive_int,
        nargs="+",
        default=[32, 128],
        help="batch sizes to time (default 32 128)",
    )
    parser.add_argument("--max_new_tokens", type=positive_int, default=75, help="per generated answer (default 75)")
    parser.add_argument(
        "--score_n",
        type=positive_int,
        default=250,
        help="instances per scenario for scoring (default 250: the paper's protocol)",
    )
    parser.add_argument(
        "--score_batch_sizes",
        type=positive_int,
        nargs="+",
        default=[16, 64],
        help="scoring batch sizes to time (default 16 64)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and data (default 0)")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="CPU check of every section on tiny models with tiny sizes (no GPU needed)",
    )
    args = parser.parse_args(argv)
    if args.gen_sequential_n > args.gen_n:
        parser.error(f"--gen_sequential_n {args.gen_sequential_n} is larger than --gen_n {args.gen_n}")
    if args.dry_run:  # tiny sizes; what the user set explicitly on the command line still counts
        explicit = {arg.split("=")[0] for arg in (argv if argv is not None else sys.argv[1:]) if arg.startswith("--")}
        tiny = {
            "steps": 2,
            "warmup_steps": 1,
            "micro_batch": 2,
            "seq_len": 32,
            "gen_n": 6,
            "gen_sequential_n": 3,
            "gen_batch_sizes": [3],
            "max_new_tokens": 4,
            "score_n": 1,
            "score_batch_sizes": [4, 16],
        }
        for key, value in tiny.items():
            if f"--{key}" not in explicit:
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        device = torch.device("cpu")
        # fp16 mixed precision is a GPU feature: the dry run trains in bf16 (CPU autocast) only.
        args.precisions = [p for p in args.precisions if p != "fp16"] or ["bf16"]
    elif not torch.cuda.is_available():
        return fail(
            "no CUDA GPU is visible: run this on a GPU machine, or pass --dry_run for a CPU check on tiny models"
        )
    else:
        device = torch.device("cuda")
    try:
        if args.output_file:
            check_output_file(args.output_file)
    except OSError as error:
        return fail(error)

    started = time.perf_counter()
    versions = library_versions()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (dry run on CPU)"
    report = Report(
        args.output_file,
        [
            "# GPU check",
            "",
            f"Command: `{command.strip()}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            f"Device: {gpu}; " + ", ".join(f"{key} {value}" for key, value in versions.items()) + ".",
            "",
            "Random-weight models of real configs (soo/tools/model_configs): the shapes and so the costs are real, the "
            "activations are not trained ones."
            + (" DRY RUN: tiny models, tiny sizes, CPU; figures mean nothing." if args.dry_run else ""),
            "",
        ],
    )
    report.write()
    peak_tflops, peak_text = datasheet_peak_tflops(device)
    with tempfile.TemporaryDirectory(prefix="soo-gpu-check-") as workdir:
        check = Check(args, device, report, workdir, peak_tflops, peak_text)
        for section in args.sections:
            section_started = time.perf_counter()
            try:
                SECTIONS[section](check)
            except Exception as error:  # one broken section must not lose the others' figures
                traceback.print_exc()
                report.failed.append(section)
                report.add(
                    f"{section}: FAILED",
                    [f"`{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}`"],
                )
                release(device)
            print(f"[{section}: {time.perf_counter() - section_started:.0f} s]", file=sys.stderr, flush=True)
    report.header.append(
        f"Total wall time: {time.perf_counter() - started:.0f} s"
        + (f"; FAILED sections: {', '.join(report.failed)}" if report.failed else "")
        + ".\n"
    )
    report.write()
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
