"""The training and qlora sections of the GPU check: SOOTrainer LoRA steps with finetuning.py's
defaults, timed and FLOP-counted, peak memory against soo.tools.memory's estimate, and on Gemma-2
the fp16 guard against an injected activation outlier."""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch

from benchmarks.gpu.context import Check
from benchmarks.gpu.device import release, synchronize
from benchmarks.gpu.models import (
    MODELS,
    THROUGHPUT_MODEL,
    attention_implementation,
    model_config,
    random_model,
    synthetic_pairs,
)

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
OUTLIER_SCALE = 1e6  # beyond fp16's range (65504) for any activation above 0.07, far inside bf16's
LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 8, 32, 0.05, ["q_proj", "v_proj"]  # finetuning.py's defaults


@dataclass
class TrainingResult:
    model: str
    precision: str
    parameters: int
    tokens_per_step: int
    step_seconds: list[float] = field(default_factory=list)
    step_flops: float = 0.0
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    estimate_gib: float = 0.0
    losses: list[float] = field(default_factory=list)
    error: str = ""
    overflow: str = ""  # the injected-outlier outcome (Gemma-2 only)

    @property
    def median_step(self) -> float:
        ordered = sorted(self.step_seconds)
        return ordered[len(ordered) // 2] if ordered else float("nan")


def memory_estimate_gib(config, hub_id: str, dtype: str, load_in_4bit: bool, micro_batch: int, seq_len: int) -> float:
    """soo.tools.memory's per-GPU estimate (one GPU, ZeRO-2 layout = plain single-GPU training) without
    its fixed CUDA overhead: what torch.cuda.max_memory_allocated measures."""
    from soo.tools.memory_estimate import GIB, lora_aware_estimate
    from soo.tools.memory_model import RunSettings, build_meta_model, count_parameters

    settings = RunSettings(
        model_name_or_path=hub_id,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
        attn_implementation=attention_implementation(config),
        lora_r=LORA_R,
        lora_target_modules=LORA_TARGETS,
        micro_batch=micro_batch,
        seq_len=seq_len,
        activation_checkpointing=False,
        soo_layers=1,
    )
    counts = count_parameters(build_meta_model(config), LORA_R, LORA_TARGETS)
    components = lora_aware_estimate(2, "none", counts, settings, gpus_per_node=1, nodes=1, overhead_gib=0.0)
    return sum(c["bytes_per_gpu"] for c in components if c["where"] == "gpu") / GIB


class StepTimer:
    """A TrainerCallback timing each optimizer step (forward + backward + AdamW), device-synchronised."""

    def __init__(self, device: torch.device):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                synchronize(device)
                timer.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                synchronize(device)
                timer.seconds.append(time.perf_counter() - timer.started)

        self.seconds: list[float] = []
        self.started = 0.0
        self.callback = _Callback()


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def train_and_measure(
    model, config, name: str, hub_id: str, precision: str, load_in_4bit: bool, args, device: torch.device, workdir: str
) -> TrainingResult:
    """Wrap `model` in LoRA, count one step's FLOPs, train warm-up + timed steps with SOOTrainer."""
    from transformers import PrinterCallback

    from soo.core.modeling import add_lora
    from soo.core.pair_batch import SOOPairCollator
    from soo.train.config import SOOConfig
    from soo.train.trainer import NonFiniteLossError, SOOTrainer

    parameters = sum(p.numel() for p in model.parameters())
    model = add_lora(
        model, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGETS, quantized=load_in_4bit
    )
    steps = args.warmup_steps + args.steps
    pairs = synthetic_pairs(steps * args.micro_batch, args.seq_len, config.vocab_size, args.seed)
    layer = config.num_hidden_layers // 2
    training_args = SOOConfig(
        output_dir=workdir,
        max_steps=steps,
        per_device_train_batch_size=args.micro_batch,
        learning_rate=1e-4,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        soo_layers=[layer],
    )
    collator = SOOPairCollator(pad_token_id=0)
    timer = StepTimer(device)
    trainer = SOOTrainer(
        model=model, args=training_args, train_dataset=pairs, data_collator=collator, callbacks=[timer.callback]
    )
    trainer.remove_callback(PrinterCallback)  # the losses go to the report, not one dict per step to stdout
    result = TrainingResult(
        model=name,
        precision=precision + (" 4-bit" if load_in_4bit else ""),
        parameters=parameters,
        tokens_per_step=2 * args.micro_batch * args.seq_len,
    )
    result.estimate_gib = memory_estimate_gib(
        config, hub_id, "bfloat16" if precision == "bf16" else "float16", load_in_4bit, args.micro_batch, args.seq_len
    )

    batch = {key: value.to(device) for key, value in collator(pairs[: args.micro_batch]).items()}
    result.step_flops = count_step_flops(trainer, model, batch, device, precision)
    trainer._metric_stats["train"].clear()  # the counting step is not a training step

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        trainer.train()
    except NonFiniteLossError as error:
        result.error = f"NonFiniteLossError: {str(error).splitlines()[0][:160]}"
    result.step_seconds = timer.seconds[args.warmup_steps :]
    result.losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if device.type == "cuda":
        result.peak_allocated_gib = torch.cuda.max_memory_allocated(device) / 2**30
        result.peak_reserved_gib = torch.cuda.max_memory_reserved(device) / 2**30

    if config.model_type == "gemma2" and not load_in_4bit:
        result.overflow = injected_outlier_outcome(trainer, model, batch, layer, device, precision)
    del trainer
    return result


def count_step_flops(trainer, model, batch, device: torch.device, precision: str) -> float:
    """FLOPs of one forward + backward, counted by FlopCounterMode. Its SDPA formula rejects the
    grouped-query call (fewer key/value heads) that transformers makes on CUDA: then the step is
    counted with eager attention, whose matmuls do the same work."""
    from torch.utils.flop_counter import FlopCounterMode

    base = model.get_base_model()
    original = base.config._attn_implementation
    for implementation in dict.fromkeys([original, "eager"]):
        base.set_attn_implementation(implementation)
        try:
            counter = FlopCounterMode(display=False)
            with counter, _autocast(device, precision):
                trainer.compute_loss(model, batch).backward()
            return counter.get_total_flops()
        except AssertionError:
            if implementation == "eager":
                raise
        finally:
            model.zero_grad(set_to_none=True)
            base.set_attn_implementation(original)
    raise AssertionError("unreachable")


def injected_outlier_outcome(trainer, model, batch, layer: int, device: torch.device, precision: str) -> str:
    """One loss with the SOO layer's o_proj output scaled by OUTLIER_SCALE: does the guard fire?"""
    from soo.core.capture import find_decoder_layers
    from soo.train.trainer import NonFiniteLossError

    module = find_decoder_layers(model)[1][layer].get_submodule(trainer.args.soo_module)
    handle = module.register_forward_hook(lambda _module, _inputs, output: output * OUTLIER_SCALE)
    try:
        with torch.no_grad(), _autocast(device, precision):
            loss = trainer.compute_loss(model, batch)
        return f"loss finite ({loss.item():.3g}): no guard needed"
    except NonFiniteLossError as error:
        return f"guard fired: NonFiniteLossError ({str(error).split(':')[0]})"
    finally:
        handle.remove()
        trainer._metric_stats["train"].clear()


def training_table(results: list[TrainingResult], peak_tflops: float | None, matmul_tflops: float | None) -> list[str]:
    lines = [
        "| model | precision | params | tokens/step | s/step (median) | tokens/s | step TFLOPs | "
        "MFU vs datasheet | vs measured matmul | peak alloc GiB | soo.tools.memory estimate GiB | measured/estimate | "
        "losses (first, last) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        step = r.median_step
        achieved = r.step_flops / step / 1e12 if r.step_seconds else float("nan")
        mfu = f"{achieved / peak_tflops:.1%}" if peak_tflops else "n/a"
        vs_matmul = f"{achieved / matmul_tflops:.1%}" if matmul_tflops else "n/a"
        peak = (
            f"{r.peak_allocated_gib:.2f} (reserved {r.peak_reserved_gib:.2f})" if r.peak_allocated_gib else "n/a (CPU)"
        )
        ratio = f"{r.peak_allocated_gib / r.estimate_gib:.2f}" if r.peak_allocated_gib else "n/a"
        losses = f"{r.losses[0]:.3f}, {r.losses[-1]:.3f}" if r.losses else "none"
        if r.error:
            losses += f"; stopped: {r.error}"
        lines.append(
            f"| {r.model} | {r.precision} | {r.parameters / 1e9:.3g} B | {r.tokens_per_step} | {step:.3f} | "
            f"{r.tokens_per_step / step:,.0f} | {r.step_flops / 1e12:.3g} | {mfu} | {vs_matmul} | {peak} | "
            f"{r.estimate_gib:.3g} | {ratio} | {losses} |"
        )
    return lines


def run_training(check: Check) -> None:
    from soo.core.modeling import warn_if_fp16_unsafe

    args, device = check.args, check.device
    results, fp16_warning = [], "not checked (no Gemma-2 fp16 run)"
    for name in args.models:
        config = model_config(name, args.dry_run)
        for precision in args.precisions:
            print(f"training: {name} {precision}", file=sys.stderr, flush=True)
            if name == "gemma2-2b" and precision == "fp16":
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    warn_if_fp16_unsafe(config.model_type, True)
                fp16_warning = "yes" if any("overflow" in str(w.message) for w in caught) else "NO"
            model = random_model(config, PRECISIONS[precision], device, args.seed)
            results.append(
                train_and_measure(
                    model,
                    config,
                    name,
                    MODELS[name],
                    precision,
                    False,
                    args,
                    device,
                    os.path.join(check.workdir, f"{name}-{precision}"),
                )
            )
            del model
            release(device)
    lines = training_table(results, check.peak_tflops, check.matmul_tflops)
    overflow = [r for r in results if r.overflow]
    if overflow:
        lines += [
            "",
            f"fp16 guard on Gemma-2: finetuning.py's fp16 warning raised: {fp16_warning}. One loss with the "
            f"SOO layer's o_proj output x {OUTLIER_SCALE:g} (an injected activation outlier):",
            "",
            "| model | precision | outcome |",
            "|---|---|---|",
        ]
        lines += [f"| {r.model} | {r.precision} | {r.overflow} |" for r in overflow]
    check.report.add(
        "Training steps (LM + SOO, LoRA)",
        [
            f"{args.micro_batch} pairs/step ({2 * args.micro_batch} rows) x {args.seq_len} tokens, LoRA r {LORA_R} "
            f"q_proj/v_proj, SOO at the middle layer, AdamW; {args.warmup_steps} warm-up + {args.steps} timed steps. "
            "Weights in the precision named, Trainer's mixed precision on; Gemma-2 with eager attention. Step FLOPs are "
            "counted by FlopCounterMode (matmuls and attention; a LoRA step skips the frozen weights' gradients, so "
            "it is ~4 x params x tokens, not 6). Peak memory is torch's max allocated; the estimate is soo.tools.memory's "
            "for one GPU without its fixed 1 GiB CUDA overhead.",
            "",
            *lines,
        ],
    )


def run_qlora(check: Check) -> None:
    import importlib.util

    args, device, report = check.args, check.device, check.report
    title = "QLoRA step (4-bit NF4 base, bitsandbytes)"
    if device.type != "cuda":
        report.add(title, ["Skipped: 4-bit loading needs a CUDA GPU (this run has none)."])
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        report.add(
            title,
            ["Skipped: bitsandbytes is not importable here (bring its wheel: `bash benchmarks/gpu_check.sh prepare`)."],
        )
        return
    from soo.core.modeling import load_model

    name = THROUGHPUT_MODEL
    config = model_config(name, args.dry_run)
    checkpoint = os.path.join(check.workdir, f"{name}-checkpoint")
    model = random_model(config, torch.bfloat16, device, args.seed)
    model.save_pretrained(checkpoint)  # 4-bit quantization happens while loading a checkpoint
    del model
    release(device)
    model = load_model(checkpoint, dtype="bfloat16", load_in_4bit=True)
    result = train_and_measure(
        model, config, name, MODELS[name], "bf16", True, args, device, os.path.join(check.workdir, f"{name}-qlora")
    )
    del model
    release(device)
    report.add(
        title,
        [
            f"{name} saved with random bf16 weights, reloaded through soo.core.modeling.load_model("
            "load_in_4bit=True) (NF4, double quantization, bf16 compute), then the same steps as above.",
            "",
            *training_table([result], check.peak_tflops, check.matmul_tflops),
        ],
    )
