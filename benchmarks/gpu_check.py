"""One-shot GPU check: SOO LoRA training in bf16, fp16 and 4-bit, the fp16 overflow guard, and
batched generation/scoring throughput, on random-weight models of real configs; one markdown report.

Prepare here (needs PyPI), then run on the GPU machine (needs no network):

    bash benchmarks/gpu_check.sh prepare     # wheels the GPU machine may lack -> benchmarks/gpu_wheels/
    bash benchmarks/gpu_check.sh             # there: ~3-5 min on one H200; report -> docs/benchmarks-gpu.md
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
               step / step time / the GPU's dense bf16 peak), peak memory against soo.memory's estimate
               for the same settings. On Gemma-2 it also checks the fp16 guard: finetuning.py's warning,
               and one step with an activation outlier injected (the SOO layer's o_proj output x 1e6):
               fp16 overflows and the trainer must stop with NonFiniteLossError; bf16 must stay finite.
  qlora        the same training on llama-1b loaded in 4-bit NF4 (bitsandbytes), when it imports
  generation   greedy generation of the main scenario's prompts: one at a time vs batched (llama-1b, bf16)
  scoring      forced-choice scoring of the whole protocol (every scenario, both orders, --score_n)
  evaluate     evaluate.py's engine end to end (tiny model + adapter): does it run on the GPU?

Each section is written to the report as soon as it ends, so a run cut short keeps what it measured.
A section that fails is reported as FAILED with its error and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks._cli import check_output_file, fail, positive_int

MODELS = {"gemma2-2b": "google/gemma-2-2b-it", "llama-1b": "meta-llama/Llama-3.2-1B-Instruct"}
DRY_RUN_ARCHITECTURES = {"gemma2-2b": "gemma2", "llama-1b": "llama"}  # soo.tools.tiny_model stand-ins
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
SECTIONS = ("environment", "training", "qlora", "generation", "scoring", "evaluate")
THROUGHPUT_MODEL = "llama-1b"
# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' datasheets (SXM parts unless named);
# the first name that occurs in torch's device name wins.
DATASHEET_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
                         ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0))
OUTLIER_SCALE = 1e6  # beyond fp16's range (65504) for any activation above 0.07, far inside bf16's
LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 8, 32, 0.05, ["q_proj", "v_proj"]  # finetuning.py's defaults
TINY_VOCAB = 1024
MATMUL_SIZE = {False: 8192, True: 128}  # by --dry_run: bf16 matmuls are slow on CPUs


@dataclass
class Report:
    """The markdown report, rewritten whole after every section."""

    path: str
    header: list[str]
    sections: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, title: str, lines: list[str]) -> None:
        self.sections.append("\n".join([f"## {title}", "", *lines, ""]))
        print("\n".join([f"\n## {title}", *lines]), flush=True)
        self.write()

    def write(self) -> None:
        if self.path:
            Path(self.path).write_text("\n".join(self.header + self.sections), encoding="utf-8")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def datasheet_peak_tflops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "none (CPU)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in name:
            return tflops, f"{tflops:.0f} TFLOP/s ({key} datasheet, dense bf16)"
    return None, f"unknown for {name}"


def measured_matmul_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """bf16 size^3 matmul on random data: mean of `repeats` products after 3 warm-ups."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda (torch)": str(torch.version.cuda)}
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "tokenizers", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def nvidia_smi_line() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error}"
    return result.stdout.strip().replace("\n", "; ") or result.stderr.strip()


# --------------------------------------------------------------------------------------------
# Models and data


def model_config(name: str, dry_run: bool):
    """The architecture config of `name`: the bundled real one, or a tiny one of the same class."""
    if dry_run:
        from soo.tools.tiny_model import tiny_config

        return tiny_config(DRY_RUN_ARCHITECTURES[name], TINY_VOCAB)
    from soo.tools.memory import bundled_config_path, load_bundled_config

    return load_bundled_config(bundled_config_path(MODELS[name]))


def attention_implementation(config) -> str | None:
    from soo.core.modeling import EAGER_ATTENTION_MODEL_TYPES

    return "eager" if config.model_type in EAGER_ATTENTION_MODEL_TYPES else None  # as soo.core.modeling.load_model


def random_model(config, dtype: torch.dtype, device: torch.device, seed: int):
    """A random-weight model of `config`, initialised directly on `device` (no CPU copy)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    attention = attention_implementation(config)
    kwargs = {"attn_implementation": attention} if attention else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def synthetic_pairs(count: int, seq_len: int, vocab_size: int, seed: int) -> list[dict]:
    """Self/other pairs of exactly `seq_len` random tokens that differ in a 3-token span in the middle
    (a name swap): every row is seq_len long, which is what soo.memory's estimate assumes."""
    generator = torch.Generator().manual_seed(seed)
    high = min(vocab_size, 32000)
    pairs = []
    for index in range(count):
        self_ids = torch.randint(3, high, (seq_len,), generator=generator).tolist()
        other_ids = list(self_ids)
        middle = seq_len // 2
        other_ids[middle : middle + 3] = torch.randint(3, high, (3,), generator=generator).tolist()
        pairs.append({"id": index, "self_input_ids": self_ids, "other_input_ids": other_ids})
    return pairs


# --------------------------------------------------------------------------------------------
# Training


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
    """soo.memory's per-GPU estimate (one GPU, ZeRO-2 layout = plain single-GPU training) without
    its fixed CUDA overhead: what torch.cuda.max_memory_allocated measures."""
    from soo.tools.memory import GIB, RunSettings, build_meta_model, count_parameters, lora_aware_estimate

    settings = RunSettings(model_name_or_path=hub_id, dtype=dtype, load_in_4bit=load_in_4bit,
                           attn_implementation=attention_implementation(config), lora_r=LORA_R,
                           lora_target_modules=LORA_TARGETS, micro_batch=micro_batch, seq_len=seq_len,
                           activation_checkpointing=False, soo_layers=1)
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


def train_and_measure(model, config, name: str, hub_id: str, precision: str, load_in_4bit: bool, args,
                      device: torch.device, workdir: str) -> TrainingResult:
    """Wrap `model` in LoRA, count one step's FLOPs, train warm-up + timed steps with SOOTrainer."""
    from transformers import PrinterCallback

    from soo.core.modeling import add_lora
    from soo.core.pair_batch import SOOPairCollator
    from soo.train.config import SOOConfig
    from soo.train.trainer import NonFiniteLossError, SOOTrainer

    parameters = sum(p.numel() for p in model.parameters())
    model = add_lora(model, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
                     quantized=load_in_4bit)
    steps = args.warmup_steps + args.steps
    pairs = synthetic_pairs(steps * args.micro_batch, args.seq_len, config.vocab_size, args.seed)
    layer = config.num_hidden_layers // 2
    training_args = SOOConfig(
        output_dir=workdir, max_steps=steps, per_device_train_batch_size=args.micro_batch, learning_rate=1e-4,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device.type == "cpu", logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=args.seed,
        soo_layers=[layer],
    )
    collator = SOOPairCollator(pad_token_id=0)
    timer = StepTimer(device)
    trainer = SOOTrainer(model=model, args=training_args, train_dataset=pairs, data_collator=collator,
                         callbacks=[timer.callback])
    trainer.remove_callback(PrinterCallback)  # the losses go to the report, not one dict per step to stdout
    result = TrainingResult(model=name, precision=precision + (" 4-bit" if load_in_4bit else ""),
                            parameters=parameters, tokens_per_step=2 * args.micro_batch * args.seq_len)
    result.estimate_gib = memory_estimate_gib(config, hub_id, "bfloat16" if precision == "bf16" else "float16",
                                              load_in_4bit, args.micro_batch, args.seq_len)

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
    from soo.train.trainer import NonFiniteLossError

    from soo.core.capture import find_decoder_layers

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


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def training_table(results: list[TrainingResult], peak_tflops: float | None, matmul_tflops: float | None) -> list[str]:
    lines = ["| model | precision | params | tokens/step | s/step (median) | tokens/s | step TFLOPs | "
             "MFU vs datasheet | vs measured matmul | peak alloc GiB | soo.memory estimate GiB | measured/estimate | "
             "losses (first, last) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        step = r.median_step
        achieved = r.step_flops / step / 1e12 if r.step_seconds else float("nan")
        mfu = f"{achieved / peak_tflops:.1%}" if peak_tflops else "n/a"
        vs_matmul = f"{achieved / matmul_tflops:.1%}" if matmul_tflops else "n/a"
        peak = f"{r.peak_allocated_gib:.2f} (reserved {r.peak_reserved_gib:.2f})" if r.peak_allocated_gib else "n/a (CPU)"
        ratio = f"{r.peak_allocated_gib / r.estimate_gib:.2f}" if r.peak_allocated_gib else "n/a"
        losses = f"{r.losses[0]:.3f}, {r.losses[-1]:.3f}" if r.losses else "none"
        if r.error:
            losses += f"; stopped: {r.error}"
        lines.append(f"| {r.model} | {r.precision} | {r.parameters / 1e9:.3g} B | {r.tokens_per_step} | {step:.3f} | "
                     f"{r.tokens_per_step / step:,.0f} | {r.step_flops / 1e12:.3g} | {mfu} | {vs_matmul} | {peak} | "
                     f"{r.estimate_gib:.3g} | {ratio} | {losses} |")
    return lines


def run_training(args, device: torch.device, report: Report, peak_tflops, matmul_tflops, workdir: str) -> None:
    from soo.core.modeling import warn_if_fp16_unsafe

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
            results.append(train_and_measure(model, config, name, MODELS[name], precision, False, args, device,
                                             os.path.join(workdir, f"{name}-{precision}")))
            del model
            release(device)
    lines = training_table(results, peak_tflops, matmul_tflops)
    overflow = [r for r in results if r.overflow]
    if overflow:
        lines += ["", f"fp16 guard on Gemma-2: finetuning.py's fp16 warning raised: {fp16_warning}. One loss with the "
                  f"SOO layer's o_proj output x {OUTLIER_SCALE:g} (an injected activation outlier):", "",
                  "| model | precision | outcome |", "|---|---|---|"]
        lines += [f"| {r.model} | {r.precision} | {r.overflow} |" for r in overflow]
    report.add("Training steps (LM + SOO, LoRA)", [
        f"{args.micro_batch} pairs/step ({2 * args.micro_batch} rows) x {args.seq_len} tokens, LoRA r {LORA_R} "
        f"q_proj/v_proj, SOO at the middle layer, AdamW; {args.warmup_steps} warm-up + {args.steps} timed steps. "
        "Weights in the precision named, Trainer's mixed precision on; Gemma-2 with eager attention. Step FLOPs are "
        "counted by FlopCounterMode (matmuls and attention; a LoRA step skips the frozen weights' gradients, so "
        "it is ~4 x params x tokens, not 6). Peak memory is torch's max allocated; the estimate is soo.memory's "
        "for one GPU without its fixed 1 GiB CUDA overhead.", "", *lines])


def run_qlora(args, device: torch.device, report: Report, peak_tflops, matmul_tflops, workdir: str) -> None:
    import importlib.util

    title = "QLoRA step (4-bit NF4 base, bitsandbytes)"
    if device.type != "cuda":
        report.add(title, ["Skipped: 4-bit loading needs a CUDA GPU (this run has none)."])
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        report.add(title, ["Skipped: bitsandbytes is not importable here (bring its wheel: "
                           "`bash benchmarks/gpu_check.sh prepare`)."])
        return
    from soo.core.modeling import load_model

    name = THROUGHPUT_MODEL
    config = model_config(name, args.dry_run)
    checkpoint = os.path.join(workdir, f"{name}-checkpoint")
    model = random_model(config, torch.bfloat16, device, args.seed)
    model.save_pretrained(checkpoint)  # 4-bit quantization happens while loading a checkpoint
    del model
    release(device)
    model = load_model(checkpoint, dtype="bfloat16", load_in_4bit=True)
    result = train_and_measure(model, config, name, MODELS[name], "bf16", True, args, device,
                               os.path.join(workdir, f"{name}-qlora"))
    del model
    release(device)
    report.add(title, [f"{name} saved with random bf16 weights, reloaded through soo.core.modeling.load_model("
                       "load_in_4bit=True) (NF4, double quantization, bf16 compute), then the same steps as above.", "",
                       *training_table([result], peak_tflops, matmul_tflops)])


# --------------------------------------------------------------------------------------------
# Generation and scoring throughput


def throughput_model(args, device: torch.device):
    from soo.tools.tiny_model import build_tokenizer

    config = model_config(THROUGHPUT_MODEL, args.dry_run)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(config, dtype, device, args.seed).eval()
    # An offline byte-level BPE (soo.tools.tiny_model): real prompts, token counts close to a real
    # tokenizer's; ids the model emits beyond its vocabulary decode to nothing.
    return model, build_tokenizer(TINY_VOCAB), dtype


def run_generation(args, device: torch.device, report: Report) -> None:
    from benchmarks.generation import TokenCounter, agreement, build_prompts
    from soo.core.modeling import resolve_eos_token_ids
    from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time

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
    lines = ["| batch | prompts | s | prompts/s | new tokens/s | prompt tokens | vs one at a time (prompts/s) | "
             "same text as one at a time |", "|---|---|---|---|---|---|---|---|"]
    for batch_size, count, seconds, new_tokens, prompt_tokens in rows:
        same, _ = agreement(outputs[None], outputs[batch_size][: len(outputs[None])])
        lines.append(f"| {batch_size or 'one at a time'} | {count} | {seconds:.2f} | {count / seconds:.1f} | "
                     f"{new_tokens / seconds:,.0f} | {prompt_tokens} | {count / seconds / sequential_rate:.1f}x | "
                     f"{same}/{len(outputs[None])} |")
    del model
    release(device)
    report.add("Batched generation", [
        f"{THROUGHPUT_MODEL}, random weights, {str(dtype).removeprefix('torch.')}, greedy, max_new_tokens "
        f"{args.max_new_tokens} (random weights rarely emit EOS, so nearly every row runs to the limit). Prompts: "
        f"{source}; one at a time on the first {len(sequential_prompts)}. Agreement compares those prompts' texts "
        "(random weights make near-ties common, so a few differences are padding numerics, not bugs).", "", *lines])


def run_scoring(args, device: torch.device, report: Report) -> None:
    from soo.eval.forced_choice import score_prompts
    from soo.eval.scenarios import build_eval_prompts

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
    lines = ["| batch | prompts | s | prompts/s | max abs p difference vs batch " f"{args.score_batch_sizes[0]} |",
             "|---|---|---|---|---|"]
    for batch_size, seconds in rows:
        difference = max(abs(a - b) for a, b in zip(reference, scores[batch_size]))
        lines.append(f"| {batch_size} | {len(prompts)} | {seconds:.2f} | {len(prompts) / seconds:.1f} | {difference:.2g} |")
    del model
    release(device)
    report.add("Forced-choice scoring (the whole protocol)", [
        f"{THROUGHPUT_MODEL}, random weights, {str(dtype).removeprefix('torch.')}: soo.eval.forced_choice.score_prompts "
        f"on build_eval_prompts(every scenario, n={args.score_n}) = {len(prompts)} prompts (both orders), the "
        f"log-probabilities of both options after the answer prefix. All p finite: {'yes' if finite else 'NO'}.", "",
        *lines])


def run_evaluate(args, device: torch.device, report: Report, workdir: str) -> None:
    """evaluate.py's engine end to end on a tiny random Llama and a 2-step adapter: does the model
    go to the GPU (device_map auto, since 2026-11-30; before, evaluate.py scored on the CPU) and do
    forced choice, generation, latent SOO and the capability measures run there?"""
    import finetuning
    from soo.core.io import write_jsonl_atomic
    from soo.data.pairs import generate_pairs
    from soo.eval.engine import EvalConfig, run_evaluation
    from soo.tools.tiny_model import write_tiny_model

    folder = Path(workdir) / "evaluate"
    model_dir = write_tiny_model(folder / "tiny-llama", arch="llama")
    pairs = write_jsonl_atomic(folder / "pairs.jsonl", generate_pairs(16, seed=0))
    adapter = folder / "adapter"
    code = finetuning.main(["--model_name_or_path", str(model_dir), "--data_path", str(pairs), "--soo_layers", "1",
                            "--max_steps", "2", "--output_dir", str(adapter), "--report_to", "none",
                            "--disable_tqdm", "true", "--save_strategy", "no"]
                           + (["--use_cpu"] if device.type == "cpu" else []))
    if code != 0:
        raise RuntimeError(f"finetuning.py of the tiny adapter exited {code}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    results = run_evaluation(EvalConfig(adapters=[str(adapter)], scenarios=["main", "perspectives"], n=4,
                                        protocol="both", n_pairs=8, out_dir=str(folder / "eval")))
    seconds = time.perf_counter() - started
    used = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    forced = results.get("forced_choice", {}).get("summary", [])
    report.add("evaluate.py on the GPU", [
        f"Tiny random Llama + a 2-step SOO adapter, scenarios main and perspectives, n = 4 per order, both protocols, "
        f"latent SOO on 8 pairs, capability measures: {seconds:.1f} s; forced-choice rows {len(forced)}; "
        + (f"peak GPU memory during the run {used:.1f} MiB: the model ran on the GPU: {'yes' if used > 0 else 'NO'}."
           if device.type == "cuda" else "CPU dry run.")])


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_file", default="docs/benchmarks-gpu.md",
                        help="markdown report, replaced (default docs/benchmarks-gpu.md; empty to skip)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help=f"what to run (default all): {', '.join(SECTIONS)}")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), metavar="MODEL",
                        help=f"training models (default both): {', '.join(MODELS)}")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS),
                        metavar="PRECISION", help="training precisions (default: bf16 fp16)")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup_steps", type=positive_int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--micro_batch", type=positive_int, default=8, help="pairs per step (default 8)")
    parser.add_argument("--seq_len", type=positive_int, default=256,
                        help="tokens per row (default 256, finetuning.py's --max_length)")
    parser.add_argument("--gen_n", type=positive_int, default=256, help="prompts generated batched (default 256)")
    parser.add_argument("--gen_sequential_n", type=positive_int, default=16,
                        help="of those, generated one at a time too (default 16)")
    parser.add_argument("--gen_batch_sizes", type=positive_int, nargs="+", default=[32, 128],
                        help="batch sizes to time (default 32 128)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=75, help="per generated answer (default 75)")
    parser.add_argument("--score_n", type=positive_int, default=250,
                        help="instances per scenario for scoring (default 250: the paper's protocol)")
    parser.add_argument("--score_batch_sizes", type=positive_int, nargs="+", default=[16, 64],
                        help="scoring batch sizes to time (default 16 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and data (default 0)")
    parser.add_argument("--dry_run", action="store_true",
                        help="CPU check of every section on tiny models with tiny sizes (no GPU needed)")
    args = parser.parse_args(argv)
    if args.gen_sequential_n > args.gen_n:
        parser.error(f"--gen_sequential_n {args.gen_sequential_n} is larger than --gen_n {args.gen_n}")
    if args.dry_run:  # tiny sizes; what the user set explicitly on the command line still counts
        explicit = {arg.split("=")[0] for arg in (argv if argv is not None else sys.argv[1:]) if arg.startswith("--")}
        tiny = {"steps": 2, "warmup_steps": 1, "micro_batch": 2, "seq_len": 32, "gen_n": 6, "gen_sequential_n": 3,
                "gen_batch_sizes": [3], "max_new_tokens": 4, "score_n": 1, "score_batch_sizes": [4, 16]}
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
        return fail("no CUDA GPU is visible: run this on a GPU machine, or pass --dry_run for a CPU check on tiny models")
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
    report = Report(args.output_file, [
        "# GPU check", "",
        f"Command: `{command.strip()}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"Device: {gpu}; " + ", ".join(f"{key} {value}" for key, value in versions.items()) + ".", "",
        "Random-weight models of real configs (soo/tools/model_configs): the shapes and so the costs are real, the "
        "activations are not trained ones." + (" DRY RUN: tiny models, tiny sizes, CPU; figures mean nothing."
                                               if args.dry_run else ""), ""])
    report.write()
    peak_tflops, peak_text = datasheet_peak_tflops(device)
    matmul_tflops = None
    with tempfile.TemporaryDirectory(prefix="soo-gpu-check-") as workdir:
        for section in args.sections:
            section_started = time.perf_counter()
            try:
                if section == "environment":
                    matmul_tflops = measured_matmul_tflops(device, MATMUL_SIZE[args.dry_run])
                    report.add("Environment", [
                        f"- nvidia-smi: {nvidia_smi_line() if device.type == 'cuda' else 'not run (CPU)'}",
                        f"- bf16 peak: {peak_text}; measured bf16 matmul "
                        f"({MATMUL_SIZE[args.dry_run]}^3, random data, mean of 10): {matmul_tflops:.3g} TFLOP/s",
                        f"- GPU memory: {torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB"
                        if device.type == "cuda" else "- GPU memory: none"])
                elif section == "training":
                    run_training(args, device, report, peak_tflops, matmul_tflops, workdir)
                elif section == "qlora":
                    run_qlora(args, device, report, peak_tflops, matmul_tflops, workdir)
                elif section == "generation":
                    run_generation(args, device, report)
                elif section == "scoring":
                    run_scoring(args, device, report)
                elif section == "evaluate":
                    run_evaluate(args, device, report, workdir)
            except Exception as error:  # one broken section must not lose the others' figures
                traceback.print_exc()
                report.failed.append(section)
                report.add(f"{section}: FAILED", [f"`{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}`"])
                release(device)
            print(f"[{section}: {time.perf_counter() - section_started:.0f} s]", file=sys.stderr, flush=True)
    report.header.append(f"Total wall time: {time.perf_counter() - started:.0f} s"
                         + (f"; FAILED sections: {', '.join(report.failed)}" if report.failed else "") + ".\n")
    report.write()
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
