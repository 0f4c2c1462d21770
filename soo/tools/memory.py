"""Memory planner: will a config's LoRA + SOO run fit on N GPUs x M nodes under DeepSpeed ZeRO-2/3?

No weights are read: the architecture comes from the model's config.json (a local directory or
the Hugging Face cache, never the network) or, failing that, from the copies bundled under
`soo/tools/model_configs/` for the hub ids in `configs/`. Parameters are counted exactly on
a meta-device model (no memory used).

    # one CSC Puhti GPU node (4x V100-32GB, 384 GB RAM), both ZeRO stages:
    python -m soo.tools.memory configs/gemma-2-27b-it.yaml --gpus 4 --nodes 1
    # ZeRO-3 with the optimizer state and the parameters offloaded to CPU RAM:
    python -m soo.tools.memory configs/gemma-2-27b-it.yaml --gpus 4 --nodes 1 --stage 3 --offload optimizer+params
    # V100 has no bf16: plan an fp32 run on two nodes, longer prompts, machine-readable:
    python -m soo.tools.memory configs/gemma-2-27b-it.yaml --gpus 4 --nodes 2 --dtype float32 --seq_len 512 --json
    # A100-40GB nodes (e.g. CSC Mahti), ZeRO-2 only:
    python -m soo.tools.memory configs/mistral-7b-instruct-v0.2.yaml --gpus 4 --nodes 1 --stage 2 --gpu_memory_gib 40

From Python: `plan_memory("configs/gemma-2-27b-it.yaml", gpus=4, nodes=1)` returns the dict that
`--json` prints.

The arithmetic is soo/tools/memory_estimate.py's (its docstring gives every term); the model's
settings, architecture and parameter counts come from soo/tools/memory_model.py.

Every figure is an estimate to plan a job with, not a measurement: leave some headroom.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from soo.core.cli import CommandParser, fail
from soo.tools.memory_estimate import (
    CUDA_OVERHEAD_GIB,
    DTYPE_BYTES,
    GIB,
    deepspeed_full_finetune_estimate,
    load_peak_bytes_per_node,
    lora_aware_estimate,
    to_gib,
)
from soo.tools.memory_model import (
    MemoryPlanError,
    build_meta_model,
    count_parameters,
    read_run_settings,
    resolve_architecture,
)

STAGES = ("2", "3", "both")
OFFLOAD_MODES = ("none", "optimizer", "optimizer+params")

# CSC Puhti GPU node: 4x V100 32 GB, 384 GB RAM (soo-reference.md section 5).
DEFAULT_GPU_MEMORY_GIB = 32.0
DEFAULT_NODE_RAM_GIB = 384.0


def _verdict(gpu_gib: float, gpu_limit: float, cpu_gib: float, ram_limit: float) -> dict:
    return {
        "fits_gpu": gpu_gib <= gpu_limit,
        "fits_node_ram": cpu_gib <= ram_limit,
        "fits": gpu_gib <= gpu_limit and cpu_gib <= ram_limit,
        "gpu_headroom_gib": round(gpu_limit - gpu_gib, 4),
    }


def plan_memory(
    config_path: str | Path,
    gpus: int,
    nodes: int = 1,
    stage: str | int = "both",
    offload: str = "none",
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    node_ram_gib: float = DEFAULT_NODE_RAM_GIB,
    seq_len: int | None = None,
    micro_batch: int | None = None,
    dtype: str | None = None,
    load_in_4bit: bool | None = None,
    overhead_gib: float = CUDA_OVERHEAD_GIB,
) -> dict:
    """Memory plan of a config on `gpus` GPUs per node x `nodes` nodes; see the module docstring.

    `stage` is 2, 3 or "both"; `offload` one of none, optimizer, optimizer+params (ZeRO-3 only).
    `seq_len`, `micro_batch`, `dtype`, `load_in_4bit` override the config's values.
    """
    stage = str(stage)
    if stage not in STAGES:
        raise MemoryPlanError(f"Unknown ZeRO stage '{stage}': choose 2, 3 or both.")
    if offload not in OFFLOAD_MODES:
        raise MemoryPlanError(f"Unknown offload mode '{offload}': choose one of {', '.join(OFFLOAD_MODES)}.")
    if stage == "2" and offload == "optimizer+params":
        raise MemoryPlanError("ZeRO-2 cannot offload parameters: use --offload optimizer, or --stage 3.")
    if gpus < 1 or nodes < 1:
        raise MemoryPlanError("--gpus and --nodes must be at least 1.")
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise MemoryPlanError(f"Unknown dtype '{dtype}': choose one of {', '.join(DTYPE_BYTES)}.")

    _, settings = read_run_settings(config_path)
    if dtype is not None:
        settings.dtype = dtype
    if seq_len is not None:
        settings.seq_len = seq_len
    if micro_batch is not None:
        settings.micro_batch = micro_batch
    if load_in_4bit is not None:
        settings.load_in_4bit = load_in_4bit

    config, source = resolve_architecture(settings.model_name_or_path)
    if settings.dtype == "auto":  # the checkpoint's own dtype, as from_pretrained(dtype="auto")
        settings.dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        settings.dtype = settings.dtype.replace("torch.", "")
    if settings.dtype not in DTYPE_BYTES:
        raise MemoryPlanError(f"Training dtype '{settings.dtype}' is not one of {', '.join(DTYPE_BYTES)}.")
    counts = count_parameters(build_meta_model(config), settings.lora_r, settings.lora_target_modules)

    notes = []
    stages = [2, 3] if stage == "both" else [int(stage)]
    plans = []
    for zero_stage in stages:
        stage_offload = offload
        if zero_stage == 2 and offload == "optimizer+params":
            stage_offload = "optimizer"
            notes.append("ZeRO-2 cannot offload parameters: its section offloads the optimizer only.")
        full = deepspeed_full_finetune_estimate(
            zero_stage, counts.total_params, counts.largest_layer_params, gpus, nodes, stage_offload
        )
        full_gpu_gib, full_cpu_gib = to_gib(full["gpu_bytes_per_gpu"]), to_gib(full["cpu_bytes_per_node"])
        full.update(
            gpu_gib_per_gpu=full_gpu_gib,
            cpu_gib_per_node=full_cpu_gib,
            **_verdict(full_gpu_gib, gpu_memory_gib, full_cpu_gib, node_ram_gib),
        )

        components = lora_aware_estimate(zero_stage, stage_offload, counts, settings, gpus, nodes, overhead_gib)
        gpu_bytes = sum(c["bytes_per_gpu"] for c in components if c["where"] == "gpu")
        cpu_steady = sum(c["bytes_per_node"] for c in components if c["where"] == "cpu")
        load_peak = load_peak_bytes_per_node(zero_stage, counts, settings, gpus)
        cpu_bytes = max(cpu_steady, load_peak)
        lora = {
            "components": components,
            "gpu_bytes_per_gpu": gpu_bytes,
            "cpu_bytes_per_node": int(cpu_bytes),
            "gpu_gib_per_gpu": to_gib(gpu_bytes),
            "gpu_gib_per_node": to_gib(gpu_bytes * gpus),
            "cpu_steady_gib_per_node": to_gib(cpu_steady),
            "cpu_load_peak_gib_per_node": to_gib(load_peak),
            "cpu_gib_per_node": to_gib(cpu_bytes),
            **_verdict(gpu_bytes / GIB, gpu_memory_gib, cpu_bytes / GIB, node_ram_gib),
        }
        plans.append({"stage": zero_stage, "offload": stage_offload, "deepspeed_full_finetune": full, "lora": lora})

    if settings.load_in_4bit:
        notes.append(
            "4-bit (QLoRA) base weights: ZeRO-3 needs bnb_4bit_quant_storage set to the training dtype, "
            "and zero.Init is skipped for quantized models."
        )
    if settings.dtype == "bfloat16":
        notes.append("bf16 needs Ampere or newer, which V100 (Puhti) is not: there plan --dtype float32 (or float16).")
    total_gpus = gpus * nodes
    return {
        "config": str(config_path),
        "model": {
            "name": settings.model_name_or_path or "embedded",
            "architecture_source": source,
            **dataclasses.asdict(counts),
        },
        "setup": {
            "gpus_per_node": gpus,
            "nodes": nodes,
            "total_gpus": total_gpus,
            "gpu_memory_gib": gpu_memory_gib,
            "node_ram_gib": node_ram_gib,
            "offload": offload,
            "dtype": settings.dtype,
            "load_in_4bit": settings.load_in_4bit,
            "micro_batch": settings.micro_batch,
            "rows_per_micro_batch": 2 * settings.micro_batch,
            "seq_len": settings.seq_len,
            "activation_checkpointing": settings.activation_checkpointing,
            "lora_r": settings.lora_r,
            "lora_target_modules": settings.lora_target_modules,
            "overhead_gib": overhead_gib,
        },
        "stages": plans,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# Text output


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_plan(plan: dict) -> str:
    model, setup = plan["model"], plan["setup"]
    lines = [
        f"Model {model['name']} ({model['model_class']}; architecture from {model['architecture_source']})",
        f"  {model['total_params']:,} params; largest layer {model['largest_layer_name']} "
        f"{model['largest_layer_params']:,}; LoRA r={setup['lora_r']} on {setup['lora_target_modules']}: "
        f"{model['lora_params']:,} params in {model['lora_modules']} modules "
        f"({100 * model['lora_params'] / model['total_params']:.3f}%)",
        f"Setup {setup['nodes']} node(s) x {setup['gpus_per_node']} GPU(s) = {setup['total_gpus']} GPUs of "
        f"{setup['gpu_memory_gib']:g} GiB, {setup['node_ram_gib']:g} GiB RAM per node; {setup['dtype']}"
        f"{' + 4-bit base' if setup['load_in_4bit'] else ''}; micro-batch {setup['micro_batch']} pair(s) = "
        f"{setup['rows_per_micro_batch']} rows (self+other) x {setup['seq_len']} tokens; activation checkpointing "
        f"{'on' if setup['activation_checkpointing'] else 'off'}",
    ]
    for stage_plan in plan["stages"]:
        full, lora = stage_plan["deepspeed_full_finetune"], stage_plan["lora"]
        lines += [
            "",
            f"== ZeRO-{stage_plan['stage']}, offload: {stage_plan['offload']}",
            "DeepSpeed's estimate for FULL fine-tuning with Adam (upper bound, model states only): "
            f"{full['gpu_gib_per_gpu']:.1f} GiB per GPU, {full['cpu_gib_per_node']:.1f} GiB CPU RAM per node "
            f"-> full fine-tuning fits: {_yes(full['fits'])}",
            "LoRA-aware estimate for this run:",
            f"  {'component':<62} {'where':<5} {'per GPU GiB':>11} {'per node GiB':>12}",
        ]
        for component in lora["components"]:
            lines.append(
                f"  {component['name']:<62} {component['where']:<5} {component['gib_per_gpu']:>11.2f} "
                f"{component['gib_per_node']:>12.2f}"
            )
        lines.append(
            f"  {'total GPU':<62} {'gpu':<5} {lora['gpu_gib_per_gpu']:>11.2f} {lora['gpu_gib_per_node']:>12.2f}"
        )
        lines.append(f"  {'total CPU RAM (steady)':<62} {'cpu':<5} {'':>11} {lora['cpu_steady_gib_per_node']:>12.2f}")
        if lora["cpu_load_peak_gib_per_node"]:
            lines.append(
                f"  {'CPU RAM peak at model load (every rank holds a full copy)':<62} {'cpu':<5} {'':>11} "
                f"{lora['cpu_load_peak_gib_per_node']:>12.2f}"
            )
        tight = (
            " - tight, under 10% headroom"
            if lora["fits_gpu"] and lora["gpu_headroom_gib"] < 0.1 * setup["gpu_memory_gib"]
            else ""
        )
        lines.append(
            f"fits: {_yes(lora['fits'])} ({lora['gpu_gib_per_gpu']:.1f} of {setup['gpu_memory_gib']:g} GiB per GPU{tight}; "
            f"CPU RAM {lora['cpu_gib_per_node']:.1f} of {setup['node_ram_gib']:g} GiB per node: {_yes(lora['fits_node_ram'])})"
        )
    for note in plan["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from soo.core.cli import non_negative_float, positive_float, positive_int

    parser = CommandParser(
        prog="python -m soo.tools.memory",
        description="Per-GPU and per-node memory of a LoRA + SOO run under DeepSpeed ZeRO-2/3 (no weights needed).",
    )
    parser.add_argument("training_config", metavar="config", help="A configs/*.yaml file (the training run to plan).")
    parser.add_argument("--gpus", type=positive_int, required=True, help="GPUs per node.")
    parser.add_argument("--nodes", type=positive_int, required=True, help="Number of nodes.")
    parser.add_argument("--stage", choices=STAGES, default="both", help="ZeRO stage (default: both).")
    parser.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="Move the optimizer state (and, ZeRO-3 only, the parameters) to CPU RAM.",
    )
    parser.add_argument(
        "--gpu_memory_gib",
        type=positive_float,
        default=DEFAULT_GPU_MEMORY_GIB,
        help="Memory of one GPU (default 32: V100-32GB as on CSC Puhti).",
    )
    parser.add_argument(
        "--node_ram_gib",
        type=positive_float,
        default=DEFAULT_NODE_RAM_GIB,
        help="CPU RAM of one node (default 384, CSC Puhti).",
    )
    parser.add_argument(
        "--seq_len",
        type=positive_int,
        default=None,
        help="Tokens per row (default: the config's max_length, else 256).",
    )
    parser.add_argument(
        "--micro_batch",
        type=positive_int,
        default=None,
        help="Pairs per GPU per step (default: the config's per_device_train_batch_size).",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPE_BYTES),
        default=None,
        help="Training dtype (default: the config's dtype/bf16/fp16).",
    )
    parser.add_argument(
        "--load_in_4bit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="4-bit (QLoRA) base weights (default: the config's load_in_4bit).",
    )
    parser.add_argument(
        "--overhead_gib",
        type=non_negative_float,
        default=CUDA_OVERHEAD_GIB,
        help="Fixed per-GPU CUDA/NCCL/workspace overhead (default 1).",
    )
    parser.add_argument("--json", action="store_true", help="Print the plan as JSON.")
    args = parser.parse_args(argv)
    try:
        plan = plan_memory(
            args.training_config,
            gpus=args.gpus,
            nodes=args.nodes,
            stage=args.stage,
            offload=args.offload,
            gpu_memory_gib=args.gpu_memory_gib,
            node_ram_gib=args.node_ram_gib,
            seq_len=args.seq_len,
            micro_batch=args.micro_batch,
            dtype=args.dtype,
            load_in_4bit=args.load_in_4bit,
            overhead_gib=args.overhead_gib,
        )
    except MemoryPlanError as error:
        return fail(error)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
