"""Benchmark: SOO training step time against the reference recipe, plain LoRA, and SOO-only early exit.

    python -m benchmarks.training                      # SmolLM2-135M (embedded), layer 15, 4 pairs/step, 5 repeats
    python -m benchmarks.training --repeats 2 --steps 2   # a quick run
    python -m benchmarks.training --model_name_or_path /tmp/tiny --soo_layer 2 --repeats 1 --steps 1 --output_file b.md

One model, one LoRA (r 8, alpha 32, q_proj/v_proj, dropout 0), the same batches of training pairs
for every variant; a step = forward + backward + AdamW step on the LoRA parameters:

  ours_lm_soo        SOOTrainer.compute_loss, lm_weight 1, soo_weight 1: one forward over [self; other],
                     padded to the longest prompt in the batch
  lora_lm_only       plain LoRA LM loss on the same rows, no hooks, no SOO term (the floor for ours)
  reference_pad512   what the seed replication and the official code do: self and other in two
                     separate forwards, every prompt padded to 512 tokens, LM + SOO (MSE on the hooked
                     output over the real tokens)
  soo_only_full      lm_weight 0, whole forward (finetuning.py --soo_early_exit false)
  soo_only_early     lm_weight 0, forward stopped after the SOO layer's module (the default)

Variants are interleaved within each repeat (this machine is noisy): ratios come from the same run.
The table is printed last; a markdown report goes to results/benchmarks/training.md (--output_file;
docs/benchmarks/training.md is the committed one).
This is a script, not a test (test/test_benchmarks.py runs it once on a tiny model so it cannot rot).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks._cli import TRAINING_REPORT, add_model_arguments, check_output_file, fail, positive_int
from benchmarks._machine import load_average, machine_info
from soo.core.cli import CommandParser

VARIANTS = ("ours_lm_soo", "lora_lm_only", "reference_pad512", "soo_only_full", "soo_only_early")
# (numerator, denominator, target, how the target reads)
RATIOS = (
    ("reference_pad512", "ours_lm_soo", 4.0, ">= 4x: ours faster than the reference recipe"),
    ("ours_lm_soo", "lora_lm_only", 1.10, "<= 1.10x: the SOO term's overhead over plain LoRA"),
    ("soo_only_full", "soo_only_early", 1.5, ">= 1.5x: early exit speed-up (SOO only)"),
)


def build(model_path: str | None, soo_layer: int, batch_pairs: int, seed: int):
    from soo.core.modeling import add_lora, load_model, load_tokenizer, resolve_model_path
    from soo.core.pair_batch import SOOPairCollator, SOOPairDataset
    from soo.data.pair_generation import generate_pairs
    from soo.train.config import SOOConfig
    from soo.train.trainer import SOOTrainer

    torch.manual_seed(seed)
    path = resolve_model_path(model_path)
    tokenizer = load_tokenizer(path)
    model = add_lora(load_model(path, dtype="float32"), r=8, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model.train()
    records = generate_pairs(n=batch_pairs * 8, seed=seed, split="train")
    dataset = SOOPairDataset(records, tokenizer)
    config = SOOConfig(
        output_dir="/tmp/soo-bench",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        lm_weight=1.0,
        soo_weight=1.0,
        soo_layers=[soo_layer],
        soo_module="self_attn.o_proj",
        soo_token_mode="full",
        soo_early_exit=True,
    )
    trainer = SOOTrainer(
        model=model, args=config, train_dataset=dataset, data_collator=SOOPairCollator(tokenizer.pad_token_id)
    )
    batches = [[dataset[i] for i in range(start, start + batch_pairs)] for start in range(0, len(dataset), batch_pairs)]
    return path, tokenizer, model, trainer, batches


def make_steps(model, trainer, pad_id: int):
    """One callable per variant: features (a list of pairs) -> loss, doing forward + backward."""
    from soo.core.loss import lm_loss_per_sequence
    from soo.core.prompts import right_padded

    def ours(lm_weight: float, early: bool):
        def step(features):
            trainer.args.lm_weight = lm_weight
            trainer.early_exit = early and lm_weight == 0
            loss = trainer.compute_loss(model, trainer.data_collator(features))
            loss.backward()
            return loss

        return step

    def lora_lm_only(features):
        rows = [f["self_input_ids"] for f in features] + [f["other_input_ids"] for f in features]
        input_ids, mask = right_padded(rows, pad_id)
        trainer.capture.stop_after_capture = False
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        loss = lm_loss_per_sequence(logits, input_ids.masked_fill(mask == 0, -100)).mean()
        loss.backward()
        return loss

    def reference_pad512(features):
        passes = []
        for key in ("self_input_ids", "other_input_ids"):
            input_ids, mask = right_padded([f[key] for f in features], pad_id, width=512)
            trainer.capture.reset()
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            lm = lm_loss_per_sequence(logits, input_ids.masked_fill(mask == 0, -100)).mean()
            passes.append((trainer.capture.stacked()[0], mask, lm))
        (self_acts, self_mask, self_lm), (other_acts, other_mask, other_lm) = passes
        both = (self_mask * other_mask).unsqueeze(-1).float()  # positions real in both prompts
        soo = ((self_acts - other_acts).pow(2) * both).sum() / (both.sum() * self_acts.shape[-1])
        loss = (self_lm + other_lm) / 2 + soo
        loss.backward()
        return loss

    return {
        "ours_lm_soo": ours(1.0, False),
        "lora_lm_only": lora_lm_only,
        "reference_pad512": reference_pad512,
        "soo_only_full": ours(0.0, False),
        "soo_only_early": ours(0.0, True),
    }


def time_variant(step, features_list, optimizer, steps: int) -> float:
    """Mean seconds per step over `steps` steps (forward + backward + optimizer step)."""
    started = time.perf_counter()
    for index in range(steps):
        optimizer.zero_grad(set_to_none=True)
        step(features_list[index % len(features_list)])
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=positive_int, default=3, help="timed steps per variant per repeat (default 3)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds over the variants (default 5)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"variants to time (default: all): {', '.join(VARIANTS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the LoRA init and the pairs (default 0)")
    parser.add_argument(
        "--output_file",
        default=TRAINING_REPORT,
        help=f"markdown report, replaced (default {TRAINING_REPORT}; empty to skip)",
    )
    args = parser.parse_args(argv)

    from soo.core.modeling import ModelLoadError

    command = "python -m benchmarks.training " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if args.output_file:
            check_output_file(args.output_file)
        model_path, tokenizer, model, trainer, batches = build(
            args.model_name_or_path, args.soo_layer, args.batch_pairs, args.seed
        )
    except (OSError, ModelLoadError, ValueError) as error:  # ValueError: e.g. a layer the model does not have
        return fail(error)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    steps = make_steps(model, trainer, tokenizer.pad_token_id)
    for name in args.variants:  # warm-up: allocator, kernels, first-call costs
        time_variant(steps[name], batches, optimizer, 1)
    seconds = {name: [] for name in args.variants}
    load_before = load_average()
    for repeat in range(args.repeats):
        for name in args.variants:
            seconds[name].append(time_variant(steps[name], batches, optimizer, args.steps))
        print(
            f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {seconds[n][-1]:.3f}s" for n in args.variants),
            flush=True,
        )

    rows = [(name, min(values), statistics.median(values), max(values)) for name, values in seconds.items()]
    ratio_rows = []
    for numerator, denominator, target, reading in RATIOS:
        if numerator in seconds and denominator in seconds:
            per_repeat = [a / b for a, b in zip(seconds[numerator], seconds[denominator])]
            value = statistics.median(seconds[numerator]) / statistics.median(seconds[denominator])
            met = value >= target if reading.startswith(">=") else value <= target
            ratio_rows.append(
                (
                    f"{numerator} / {denominator}",
                    value,
                    min(per_repeat),
                    max(per_repeat),
                    reading,
                    "met" if met else "NOT met",
                )
            )
    table = ["| variant | s/step min | median | max |", "|---|---|---|---|"]
    table += [f"| {name} | {low:.3f} | {mid:.3f} | {high:.3f} |" for name, low, mid, high in rows]
    table += ["", "| ratio | median | per-repeat min | max | target | |", "|---|---|---|---|---|---|"]
    table += [
        f"| {name} | {value:.2f}x | {low:.2f}x | {high:.2f}x | {reading} | {met} |"
        for name, value, low, high, reading, met in ratio_rows
    ]

    info = machine_info()
    report = [
        "# Training step benchmark",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Model: `{model_path}`; SOO layer {args.soo_layer}; {args.batch_pairs} pairs/step; LoRA r 8 q_proj/v_proj; "
        f"fp32; {args.steps} steps x {args.repeats} repeats per variant, interleaved; seconds per step "
        "(forward + backward + AdamW).",
        "",
        f"Machine: {info['cpu']} ({info['cpu_count']} CPUs, torch threads {info['torch_threads']}), "
        f"{info['platform']}; Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}; "
        f"load average before {load_before}, after {load_average()}.",
        "",
        *table,
        "",
    ]
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text("\n".join(report), encoding="utf-8")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
