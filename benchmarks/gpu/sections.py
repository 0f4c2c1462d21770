"""The environment, generation, scoring and evaluate sections of the GPU check."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.gpu.context import Check
from benchmarks.gpu.device import measured_matmul_tflops, nvidia_smi_line, release, synchronize
from benchmarks.gpu.models import THROUGHPUT_MODEL, throughput_model

MATMUL_SIZE = {False: 8192, True: 128}  # by --dry_run: bf16 matmuls are slow on CPUs


def run_environment(check: Check) -> None:
    """nvidia-smi, the bf16 peaks (datasheet and measured: the training sections' references), memory."""
    device, size = check.device, MATMUL_SIZE[check.args.dry_run]
    check.matmul_tflops = measured_matmul_tflops(device, size)
    check.report.add(
        "Environment",
        [
            f"- nvidia-smi: {nvidia_smi_line() if device.type == 'cuda' else 'not run (CPU)'}",
            f"- bf16 peak: {check.peak_text}; measured bf16 matmul "
            f"({size}^3, random data, mean of 10): {check.matmul_tflops:.3g} TFLOP/s",
            f"- GPU memory: {torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB"
            if device.type == "cuda"
            else "- GPU memory: none",
        ],
    )


def run_generation(check: Check) -> None:
    from benchmarks.generation_methods import TokenCounter, agreement, build_prompts
    from soo.core.modeling import resolve_eos_token_ids
    from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time

    args, device = check.args, check.device
    model, tokenizer, dtype = throughput_model(args, device)
    prompts, source = build_prompts(args.gen_n, None)
    sequential_prompts = prompts[: args.gen_sequential_n]
    rows, outputs = [], {}
    with TokenCounter(model, resolve_eos_token_ids(tokenizer, model)) as counter:
        generate_batched(model, tokenizer, prompts[:2], DecodingConfig(max_new_tokens=4, batch_size=2), progress=False)
        for batch_size in [None, *args.gen_batch_sizes]:  # None: one prompt at a time
            batch_prompts = sequential_prompts if batch_size is None else prompts
            decoding = DecodingConfig(max_new_tokens=args.max_new_tokens, batch_size=batch_size or 1)
            counter.reset()
            synchronize(device)
            started = time.perf_counter()
            if batch_size is None:
                texts = generate_one_at_a_time(model, tokenizer, batch_prompts, decoding, progress=False)
            else:
                texts = generate_batched(model, tokenizer, batch_prompts, decoding, progress=False)
            synchronize(device)
            seconds = time.perf_counter() - started
            outputs[batch_size] = texts
            rows.append((batch_size, len(batch_prompts), seconds, counter.new_tokens, counter.prompt_tokens))
    sequential_rate = rows[0][1] / rows[0][2]
    lines = [
        "| batch | prompts | s | prompts/s | new tokens/s | prompt tokens | vs one at a time (prompts/s) | "
        "same text as one at a time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch_size, count, seconds, new_tokens, prompt_tokens in rows:
        same, _ = agreement(outputs[None], outputs[batch_size][: len(outputs[None])])
        lines.append(
            f"| {batch_size or 'one at a time'} | {count} | {seconds:.2f} | {count / seconds:.1f} | "
            f"{new_tokens / seconds:,.0f} | {prompt_tokens} | {count / seconds / sequential_rate:.1f}x | "
            f"{same}/{len(outputs[None])} |"
        )
    del model
    release(device)
    check.report.add(
        "Batched generation",
        [
            f"{THROUGHPUT_MODEL}, random weights, {str(dtype).removeprefix('torch.')}, greedy, max_new_tokens "
            f"{args.max_new_tokens} (random weights rarely emit EOS, so nearly every row runs to the limit). Prompts: "
            f"{source}; one at a time on the first {len(sequential_prompts)}. Agreement compares those prompts' texts "
            "(random weights make near-ties common, so a few differences are padding numerics, not bugs).",
            "",
            *lines,
        ],
    )


def run_scoring(check: Check) -> None:
    from soo.eval.forced_choice import score_prompts
    from soo.eval.scenarios import build_eval_prompts

    args, device = check.args, check.device
    model, tokenizer, dtype = throughput_model(args, device)
    prompts = build_eval_prompts(None, n=args.score_n, seed=0)
    score_prompts(model, tokenizer, prompts[:4], batch_size=4, progress=False)  # warm-up
    rows, scores = [], {}
    for batch_size in args.score_batch_sizes:
        synchronize(device)
        started = time.perf_counter()
        result = score_prompts(model, tokenizer, prompts, batch_size=batch_size, progress=False)
        synchronize(device)
        rows.append((batch_size, time.perf_counter() - started))
        scores[batch_size] = [row["p_deceptive"] for row in result]
    reference = scores[args.score_batch_sizes[0]]
    finite = all(p == p for values in scores.values() for p in values)
    lines = [
        f"| batch | prompts | s | prompts/s | max abs p difference vs batch {args.score_batch_sizes[0]} |",
        "|---|---|---|---|---|",
    ]
    for batch_size, seconds in rows:
        difference = max(abs(a - b) for a, b in zip(reference, scores[batch_size]))
        lines.append(
            f"| {batch_size} | {len(prompts)} | {seconds:.2f} | {len(prompts) / seconds:.1f} | {difference:.2g} |"
        )
    del model
    release(device)
    check.report.add(
        "Forced-choice scoring (the whole protocol)",
        [
            f"{THROUGHPUT_MODEL}, random weights, {str(dtype).removeprefix('torch.')}: soo.eval.forced_choice.score_prompts "
            f"on build_eval_prompts(every scenario, n={args.score_n}) = {len(prompts)} prompts (both orders), the "
            f"log-probabilities of both options after the answer prefix. All p finite: {'yes' if finite else 'NO'}.",
            "",
            *lines,
        ],
    )


def run_evaluate(check: Check) -> None:
    """evaluate.py's engine end to end on a tiny random Llama and a 2-step adapter: does the model
    go to the GPU (device_map auto, since 2026-11-30; before, evaluate.py scored on the CPU) and do
    forced choice, generation, latent SOO and the capability measures run there?"""
    import finetuning
    from soo.core.io import write_jsonl_atomic
    from soo.data.pair_generation import generate_pairs
    from soo.eval.config import EvalConfig
    from soo.eval.engine import run_evaluation
    from soo.tools.tiny_model import write_tiny_model

    device = check.device
    folder = Path(check.workdir) / "evaluate"
    model_dir = write_tiny_model(folder / "tiny-llama", arch="llama")
    pairs = write_jsonl_atomic(folder / "pairs.jsonl", generate_pairs(16, seed=0))
    adapter = folder / "adapter"
    code = finetuning.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--data_path",
            str(pairs),
            "--soo_layers",
            "1",
            "--max_steps",
            "2",
            "--output_dir",
            str(adapter),
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--save_strategy",
            "no",
        ]
        + (["--use_cpu"] if device.type == "cpu" else [])
    )
    if code != 0:
        raise RuntimeError(f"finetuning.py of the tiny adapter exited {code}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    results = run_evaluation(
        EvalConfig(
            adapters=[str(adapter)],
            scenarios=["main", "perspectives"],
            n=4,
            protocol="both",
            n_pairs=8,
            out_dir=str(folder / "eval"),
        )
    )
    seconds = time.perf_counter() - started
    used = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    forced = results.get("forced_choice", {}).get("summary", [])
    check.report.add(
        "evaluate.py on the GPU",
        [
            f"Tiny random Llama + a 2-step SOO adapter, scenarios main and perspectives, n = 4 per order, both protocols, "
            f"latent SOO on 8 pairs, capability measures: {seconds:.1f} s; forced-choice rows {len(forced)}; "
            + (
                f"peak GPU memory during the run {used:.1f} MiB: the model ran on the GPU: {'yes' if used > 0 else 'NO'}."
                if device.type == "cuda"
                else "CPU dry run."
            )
        ],
    )
