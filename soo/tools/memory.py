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

Two estimates per stage:

1. DeepSpeed's own estimators (`estimate_zero3_model_states_mem_needs`,
   `estimate_zero2_model_states_mem_needs`) for FULL fine-tuning with Adam: every parameter
   trainable, 16-bit weights + 18 bytes/param of gradients and fp32 optimizer state. An upper
   bound for model states only; a LoRA run needs far less.

2. The LoRA-aware estimate that our runs need (per GPU unless said otherwise; b = bytes per
   element of the training dtype: 2 for bf16/fp16, 4 for fp32; G = GPUs in all):
   * frozen base weights: P * b (4-bit QLoRA: nn.Linear weights other than the output layer at
     0.516 bytes/param, NF4 plus double-quantized scales, and the rest in fp32, to which peft's
     k-bit preparation casts it), / G under ZeRO-3, whole on every GPU
     under ZeRO-2 (it only partitions gradients and optimizer state);
   * ZeRO-3 gathered parameters: 2 x the largest module's own parameters x b (the module being run
     plus one prefetched), the same module DeepSpeed's estimator calls "largest layer";
   * LoRA adapters: 16-bit weight 2 + grad 2 + fp32 master 4 + fp32 grad 4 + Adam m 4 + v 4
     = 20 bytes/param (fp32 training: weight 4 + grad 4 + m 4 + v 4 = 16), DeepSpeed's own
     accounting; ZeRO-3 partitions all of it, ZeRO-2 keeps weight + grad whole and partitions
     the rest;
   * activations, rows = 2 x micro_batch (each pair is a self row and an other row), T = rows x
     seq_len tokens, h hidden, i MLP width, L layers, q/kv the query/key-value widths, H heads:
       one layer's working set  W = T x (6h + 3q + 3kv + 4i + a + 3 H seq_len [eager only]) x b,
       where a = the LoRA input widths of one layer (peft's dropout keeps a copy of each input),
       3q and 3kv count the projections and their rotary copies, and eager attention keeps its
       probabilities in fp32 and in 16-bit (~3 16-bit copies of H x seq_len per token);
       with activation checkpointing: T x h x L x b (each layer's input) + 2W (the layer being
       recomputed and its gradients); without: L x W + W;
       plus the SOO capture, T x h x b per compared layer.
       Checked on CPU against the tensors autograd saves (SmolLM2 layout, bf16, LoRA q/v): the
       checkpoints within 7%, W within 1% (sdpa and eager);
   * logits: T x vocab x (12 + k b): the fp32 log-softmax the loss saves, and the fp32 gradients
     going in and out of it during backward, plus k 16-bit copies (k = 1, or 2 with Gemma-2's
     final logit soft-capping, whose tanh output is saved too);
   * a fixed CUDA overhead (default 1 GiB: CUDA context, cuBLAS workspace, NCCL and DeepSpeed
     buffers; allocator fragmentation can add 10-20% on top).
   CPU RAM per node: offloaded optimizer state (fp32 master + grad + Adam, 16 bytes/param) and,
   under ZeRO-3 with `optimizer+params`, the 16-bit parameters; ~3 GiB per process for Python,
   torch and CUDA libraries; and for ZeRO-2 the load peak, when every rank builds the whole model
   in CPU RAM before DeepSpeed moves it to its GPU (ZeRO-3 loads partitioned through zero.Init,
   which the HF Trainer enables when TrainingArguments with a ZeRO-3 config exist before
   from_pretrained, as in soo/train/run.py).

Every figure is an estimate to plan a job with, not a measurement: leave some headroom.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

GIB = 2**30
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
EMBEDDED_ARCHITECTURE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what soo.core.modeling's embedded default is

STAGES = ("2", "3", "both")
OFFLOAD_MODES = ("none", "optimizer", "optimizer+params")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# CSC Puhti GPU node: 4x V100 32 GB, 384 GB RAM (soo-reference.md section 5).
DEFAULT_GPU_MEMORY_GIB = 32.0
DEFAULT_NODE_RAM_GIB = 384.0
DEFAULT_SEQ_LEN = 256  # DataArguments.max_length's default
DEFAULT_MICRO_BATCH = 8  # transformers' per_device_train_batch_size default, when a config sets none
CUDA_OVERHEAD_GIB = 1.0
HOST_PROCESS_GIB = 3.0  # RSS of one training process: Python, torch, CUDA libraries, tokenizer, data

# bitsandbytes NF4 with double quantization: 4 bits + an 8-bit absmax per 64 weights + an fp32
# constant per 256 of those = 4.127 bits per weight.
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
# DeepSpeed's mixed-precision accounting (its ZeRO-2 estimator's comment), per trainable param.
LORA_BYTES_16BIT = {"weight": 2, "grad": 2, "optimizer": 4 + 4 + 4 + 4}  # fp32 master, fp32 grad, m, v
LORA_BYTES_FP32 = {"weight": 4, "grad": 4, "optimizer": 4 + 4}  # m, v (the weight is the master)
ADDITIONAL_BUFFER_FACTOR = 1.5  # DeepSpeed's estimator default


class MemoryPlanError(ValueError):
    """A planner input is wrong or cannot be resolved; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Config and architecture


@dataclasses.dataclass
class RunSettings:
    """The fields of a configs/*.yaml file that decide memory, with finetuning.py's defaults."""

    model_name_or_path: str | None
    dtype: str
    load_in_4bit: bool
    attn_implementation: str | None
    lora_r: int
    lora_target_modules: list[str]
    micro_batch: int
    seq_len: int
    activation_checkpointing: bool
    soo_layers: int  # how many layers SOO compares (their captured outputs stay alive)


def read_run_settings(config_path: str | Path) -> tuple[dict, RunSettings]:
    """Read a flat YAML config; defaults are those finetuning.py would use."""
    import yaml

    from soo.train.config import ModelArguments

    path = Path(config_path)
    if not path.is_file():
        raise MemoryPlanError(f"Config file '{config_path}' does not exist.")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise MemoryPlanError(f"{config_path}: expected a flat mapping of argument names to values.")
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(ModelArguments)}
    bf16, fp16 = bool(values.get("bf16", False)), bool(values.get("fp16", False))
    dtype = values.get("dtype", defaults["dtype"])
    if dtype == "auto" and (bf16 or fp16):
        # DeepSpeed casts the module to its 16-bit type when bf16/fp16 is on.
        dtype = "bfloat16" if bf16 else "float16"
    settings = RunSettings(
        model_name_or_path=values.get("model_name_or_path"),
        dtype=dtype,
        load_in_4bit=bool(values.get("load_in_4bit", defaults["load_in_4bit"])),
        attn_implementation=values.get("attn_implementation"),
        lora_r=int(values.get("lora_r", defaults["lora_r"])),
        lora_target_modules=list(values.get("lora_target_modules") or defaults["lora_target_modules"]),
        micro_batch=int(values.get("per_device_train_batch_size", DEFAULT_MICRO_BATCH)),
        seq_len=int(values.get("max_length", DEFAULT_SEQ_LEN)),
        activation_checkpointing=bool(values.get("activation_checkpointing", values.get("gradient_checkpointing", False))),
        soo_layers=max(1, len(values.get("soo_layers") or [None])),  # unset: the middle layer
    )
    return values, settings


def bundled_config_path(hub_id: str) -> Path:
    """`google/gemma-2-27b-it` -> model_configs/google--gemma-2-27b-it.json."""
    return MODEL_CONFIG_DIR / (hub_id.replace("/", "--") + ".json")


def bundled_hub_ids() -> list[str]:
    return sorted(path.stem.replace("--", "/") for path in MODEL_CONFIG_DIR.glob("*.json"))


def load_bundled_config(path: Path):
    from transformers import AutoConfig

    values = json.loads(path.read_text(encoding="utf-8"))
    values = {key: value for key, value in values.items() if not key.startswith("_")}  # "_comment"
    return AutoConfig.for_model(values.pop("model_type"), **values)


def resolve_architecture(model_name_or_path: str | None):
    """Return (transformers config, where it came from), without touching the network."""
    from soo.core.modeling import is_embedded_default

    if is_embedded_default(model_name_or_path):
        path = bundled_config_path(EMBEDDED_ARCHITECTURE)
        return load_bundled_config(path), f"embedded default = {EMBEDDED_ARCHITECTURE}, bundled {path.name}"

    from transformers import AutoConfig

    location = os.path.expanduser(model_name_or_path)
    try:
        # local_files_only: a local directory or the HF cache; a planner must not hang on a
        # compute node without network.
        config = AutoConfig.from_pretrained(location, local_files_only=True)
        return config, "local directory" if Path(location).is_dir() else "Hugging Face cache"
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    path = bundled_config_path(model_name_or_path)
    if path.is_file():
        return load_bundled_config(path), f"bundled {path.name}"
    raise MemoryPlanError(
        f"Cannot resolve the architecture of '{model_name_or_path}': it is not a local model directory, "
        f"its config is not in the Hugging Face cache, and no copy is bundled (bundled: {', '.join(bundled_hub_ids())}). "
        f"Fetch only its config where there is network (`hf download {model_name_or_path} config.json`) or pass "
        f"a directory holding its config.json. (transformers said: {reason})"
    )


# --------------------------------------------------------------------------------------------
# Parameter counts on a meta-device model


@dataclasses.dataclass
class ModelCounts:
    model_type: str
    model_class: str
    total_params: int
    largest_layer_params: int  # the module with the most parameters of its own (DeepSpeed's "layer")
    largest_layer_name: str
    largest_layer_quantizable: bool
    quantizable_params: int  # nn.Linear weights a 4-bit load would quantize (all but the output layer)
    lora_params: int
    lora_modules: int
    lora_input_width: int  # sum of in_features over LoRA modules (peft's dropout copies these inputs)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    final_logit_softcapping: float | None
    tie_word_embeddings: bool


def peft_target_modules(target_modules: list[str]) -> list[str] | str:
    """The same rule as soo.core.modeling.add_lora: one entry with regex characters is a pattern."""
    targets = list(target_modules)
    if len(targets) == 1 and any(char in targets[0] for char in "*|()[]"):
        return targets[0]
    return targets


def build_meta_model(config):
    """The model class finetuning.py would load, on the meta device (shapes only, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def count_parameters(model, lora_r: int, lora_target_modules: list[str]) -> ModelCounts:
    """Exact counts from a (meta or real) model; LoRA matched with peft's own rule."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    # parameters() skips tied duplicates. DeepSpeed's model_to_params dedups by data_ptr, which is
    # 0 for every meta tensor, hence our own loop.
    total = sum(p.numel() for p in model.parameters())
    output_layer = model.get_output_embeddings()
    largest, largest_name, largest_quantizable = 0, "", False
    quantizable = 0
    lora_config = LoraConfig(r=lora_r, target_modules=peft_target_modules(lora_target_modules), task_type="CAUSAL_LM")
    lora_params = lora_modules = lora_width = 0
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        is_linear = isinstance(module, torch.nn.Linear) and module is not output_layer
        if own > largest:
            largest, largest_name, largest_quantizable = own, name, is_linear
        if is_linear:
            quantizable += module.weight.numel()
        # peft returns True, a re.Match, or a falsy value (None, False, an excluded-module marker).
        if name and check_target_module_exists(lora_config, name):
            if isinstance(module, torch.nn.Linear):
                lora_params += lora_r * (module.in_features + module.out_features)
                lora_width += module.in_features
            elif isinstance(module, torch.nn.Embedding):
                lora_params += lora_r * (module.num_embeddings + module.embedding_dim)
            else:
                raise MemoryPlanError(
                    f"LoRA target '{name}' is a {type(module).__name__}; the planner counts Linear and Embedding only."
                )
            lora_modules += 1
    if lora_modules == 0:
        raise MemoryPlanError(f"lora_target_modules {lora_target_modules} match no module of {type(model).__name__}.")

    text = model.config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelCounts(
        model_type=model.config.model_type,
        model_class=type(model).__name__,
        total_params=total,
        largest_layer_params=largest,
        largest_layer_name=largest_name,
        largest_layer_quantizable=largest_quantizable,
        quantizable_params=quantizable,
        lora_params=lora_params,
        lora_modules=lora_modules,
        lora_input_width=lora_width,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_layers=text.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab_size=text.vocab_size,
        final_logit_softcapping=getattr(text, "final_logit_softcapping", None),
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
    )


# --------------------------------------------------------------------------------------------
# DeepSpeed's estimators (full fine-tuning)


def _deepspeed_estimators():
    try:
        # DeepSpeed's logger writes to stdout and warns about the accelerator on import; keep
        # stdout clean for --json.
        with contextlib.redirect_stdout(sys.stderr):
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError as error:
        raise MemoryPlanError(
            f"DeepSpeed's estimators need the deepspeed package ({error}): pip install deepspeed (see requirements.txt)."
        ) from None
    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


def deepspeed_full_finetune_estimate(stage: int, total_params: int, largest_layer_params: int,
                                     gpus_per_node: int, nodes: int, offload: str) -> dict:
    """DeepSpeed's model-states estimate for full fine-tuning with Adam (bytes).

    Both DeepSpeed functions return (cpu_bytes, gpu_bytes[, largest_layer_memory]): CPU RAM per
    node, GPU memory per GPU. ZeRO-3 is asked with zero_init=True (what the HF Trainer does).
    """
    estimate_zero2, estimate_zero3 = _deepspeed_estimators()
    offload_optimizer = offload in ("optimizer", "optimizer+params")
    if stage == 3:
        cpu_bytes, gpu_bytes, largest_layer_memory = estimate_zero3(
            total_params=total_params,
            largest_layer_params=largest_layer_params,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=offload_optimizer,
            cpu_offload_params=offload == "optimizer+params",
            zero_init=True,
            additional_buffer_factor=ADDITIONAL_BUFFER_FACTOR,
        )
    else:
        cpu_bytes, gpu_bytes = estimate_zero2(
            total_params=total_params,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=offload_optimizer,
            additional_buffer_factor=ADDITIONAL_BUFFER_FACTOR,
        )
        largest_layer_memory = None
    return {"gpu_bytes_per_gpu": int(gpu_bytes), "cpu_bytes_per_node": int(cpu_bytes),
            "largest_layer_memory": largest_layer_memory}


# --------------------------------------------------------------------------------------------
# LoRA-aware estimate


def _gib(num_bytes: float) -> float:
    return round(num_bytes / GIB, 4)


def _component(key: str, name: str, where: str, per_gpu: float, per_node: float) -> dict:
    """One row of the table: `key` is stable for code, `name` is for people; where is gpu or cpu."""
    return {"key": key, "name": name, "where": where, "bytes_per_gpu": int(per_gpu), "bytes_per_node": int(per_node),
            "gib_per_gpu": _gib(per_gpu), "gib_per_node": _gib(per_node)}


def base_weight_bytes(counts: ModelCounts, dtype_bytes: int, load_in_4bit: bool) -> float:
    if not load_in_4bit:
        return counts.total_params * dtype_bytes
    rest = counts.total_params - counts.quantizable_params
    # peft's prepare_model_for_kbit_training (soo.core.modeling.add_lora) casts every weight that is
    # not 4-bit (embeddings, norms, output layer) to fp32; measured on an H200 (docs/benchmarks-gpu.md).
    return counts.quantizable_params * NF4_BYTES_PER_PARAM + rest * DTYPE_BYTES["float32"]


def activation_bytes(counts: ModelCounts, rows: int, seq_len: int, dtype_bytes: int, checkpointing: bool,
                     eager_attention: bool, soo_layers: int) -> dict[str, float]:
    """Activation terms of the module docstring, in bytes, for one GPU's micro-batch."""
    tokens = rows * seq_len
    h, i = counts.hidden_size, counts.intermediate_size
    q_width = counts.num_heads * counts.head_dim
    kv_width = counts.num_kv_heads * counts.head_dim
    lora_width_per_layer = counts.lora_input_width / counts.num_layers
    per_token = 6 * h + 3 * q_width + 3 * kv_width + 4 * i + lora_width_per_layer
    if eager_attention:
        per_token += 3 * counts.num_heads * seq_len  # softmax output in fp32 + 16-bit probabilities
    layer = tokens * per_token * dtype_bytes
    if checkpointing:
        stored, working = tokens * h * counts.num_layers * dtype_bytes, 2 * layer
    else:
        stored, working = counts.num_layers * layer, layer
    copies = 2 if counts.final_logit_softcapping else 1
    return {
        "stored": stored,
        "working": working,
        "soo_capture": soo_layers * tokens * h * dtype_bytes,
        "logits": tokens * counts.vocab_size * (12 + copies * dtype_bytes),
    }


def lora_aware_estimate(stage: int, offload: str, counts: ModelCounts, settings: RunSettings,
                        gpus_per_node: int, nodes: int, overhead_gib: float) -> list[dict]:
    """Per-GPU and per-node components (bytes) of a LoRA run under ZeRO-`stage`."""
    gpus = gpus_per_node * nodes
    b = DTYPE_BYTES[settings.dtype]
    lora_bytes = LORA_BYTES_16BIT if b == 2 else LORA_BYTES_FP32
    offload_optimizer = offload in ("optimizer", "optimizer+params")
    offload_params = offload == "optimizer+params" and stage == 3
    components = []

    weights = base_weight_bytes(counts, b, settings.load_in_4bit)
    weight_label = "NF4 4-bit + fp32 rest" if settings.load_in_4bit else settings.dtype
    if stage == 3:
        share = weights / gpus
        components.append(_component("base_weights", f"frozen base weights ({weight_label}), 1/{gpus} partition",
                                     "cpu" if offload_params else "gpu", share, share * gpus_per_node))
        layer_bytes = b
        if settings.load_in_4bit:  # NF4, or fp32 for what 4-bit loading leaves unquantized (see base_weight_bytes)
            layer_bytes = NF4_BYTES_PER_PARAM if counts.largest_layer_quantizable else DTYPE_BYTES["float32"]
        gathered = 2 * counts.largest_layer_params * layer_bytes
        short_name = ".".join(counts.largest_layer_name.split(".")[-1:]) or "model"
        components.append(_component("gathered_params", f"gathered params: 2 x largest layer ({short_name})", "gpu",
                                     gathered, gathered * gpus_per_node))
    else:
        components.append(_component("base_weights", f"frozen base weights ({weight_label}), whole copy", "gpu",
                                     weights, weights * gpus_per_node))

    # LoRA weights and gradients: partitioned by ZeRO-3, whole under ZeRO-2.
    lora_16 = counts.lora_params * (lora_bytes["weight"] + lora_bytes["grad"])
    lora_16_share = lora_16 / gpus if stage == 3 else lora_16
    components.append(_component("lora_weights_grads", "LoRA weights + grads", "cpu" if offload_params else "gpu",
                                 lora_16_share, lora_16_share * gpus_per_node))
    optimizer_share = counts.lora_params * lora_bytes["optimizer"] / gpus  # ZeRO-2 and -3 partition it
    optimizer_label = "LoRA optimizer state (fp32 master+grad, Adam m+v)" if b == 2 else "LoRA Adam m+v (fp32)"
    components.append(_component("lora_optimizer", optimizer_label, "cpu" if offload_optimizer else "gpu",
                                 optimizer_share, optimizer_share * gpus_per_node))

    rows = 2 * settings.micro_batch
    eager = settings.attn_implementation == "eager" or (
        settings.attn_implementation is None and counts.model_type == "gemma2"  # soo.core.modeling's default
    )
    acts = activation_bytes(counts, rows, settings.seq_len, b, settings.activation_checkpointing, eager,
                            settings.soo_layers)
    stored_label = "activations: layer-input checkpoints" if settings.activation_checkpointing else (
        "activations: all layers (no checkpointing)")
    working_label = "activations: one layer's working set " + (
        "x2 (recompute + grads)" if settings.activation_checkpointing else "(its grads)")
    logits_label = "logits (fp32 log-softmax + grads, " + (
        "2 soft-cap copies)" if counts.final_logit_softcapping else "16-bit copy)")
    for key, label in (("activations_stored", stored_label), ("activations_working", working_label),
                       ("soo_capture", "SOO captured outputs"), ("logits", logits_label)):
        value = acts[key.removeprefix("activations_")]
        components.append(_component(key, label, "gpu", value, value * gpus_per_node))
    overhead = overhead_gib * GIB
    components.append(_component("cuda_overhead", "CUDA context, workspaces, comm buffers", "gpu",
                                 overhead, overhead * gpus_per_node))

    host = HOST_PROCESS_GIB * GIB
    components.append(_component("host_processes", "host processes (Python, torch, CUDA libs)", "cpu",
                                 host, host * gpus_per_node))
    return components


def load_peak_bytes_per_node(stage: int, counts: ModelCounts, settings: RunSettings, gpus_per_node: int) -> float:
    """CPU RAM while the model loads: every ZeRO-2 rank builds the whole model before moving it."""
    if stage == 3 and not settings.load_in_4bit:
        return 0.0  # zero.Init: each rank materialises only its partition
    b = DTYPE_BYTES[settings.dtype]
    return gpus_per_node * counts.total_params * b + gpus_per_node * HOST_PROCESS_GIB * GIB


# --------------------------------------------------------------------------------------------
# The plan


def _verdict(gpu_gib: float, gpu_limit: float, cpu_gib: float, ram_limit: float) -> dict:
    return {
        "fits_gpu": gpu_gib <= gpu_limit,
        "fits_node_ram": cpu_gib <= ram_limit,
        "fits": gpu_gib <= gpu_limit and cpu_gib <= ram_limit,
        "gpu_headroom_gib": round(gpu_limit - gpu_gib, 4),
    }


def plan_memory(config_path: str | Path, gpus: int, nodes: int = 1, stage: str | int = "both",
                offload: str = "none", gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
                node_ram_gib: float = DEFAULT_NODE_RAM_GIB, seq_len: int | None = None,
                micro_batch: int | None = None, dtype: str | None = None, load_in_4bit: bool | None = None,
                overhead_gib: float = CUDA_OVERHEAD_GIB) -> dict:
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
        full = deepspeed_full_finetune_estimate(zero_stage, counts.total_params, counts.largest_layer_params,
                                                gpus, nodes, stage_offload)
        full_gpu_gib, full_cpu_gib = _gib(full["gpu_bytes_per_gpu"]), _gib(full["cpu_bytes_per_node"])
        full.update(gpu_gib_per_gpu=full_gpu_gib, cpu_gib_per_node=full_cpu_gib,
                    **_verdict(full_gpu_gib, gpu_memory_gib, full_cpu_gib, node_ram_gib))

        components = lora_aware_estimate(zero_stage, stage_offload, counts, settings, gpus, nodes, overhead_gib)
        gpu_bytes = sum(c["bytes_per_gpu"] for c in components if c["where"] == "gpu")
        cpu_steady = sum(c["bytes_per_node"] for c in components if c["where"] == "cpu")
        load_peak = load_peak_bytes_per_node(zero_stage, counts, settings, gpus)
        cpu_bytes = max(cpu_steady, load_peak)
        lora = {
            "components": components,
            "gpu_bytes_per_gpu": gpu_bytes,
            "cpu_bytes_per_node": int(cpu_bytes),
            "gpu_gib_per_gpu": _gib(gpu_bytes),
            "gpu_gib_per_node": _gib(gpu_bytes * gpus),
            "cpu_steady_gib_per_node": _gib(cpu_steady),
            "cpu_load_peak_gib_per_node": _gib(load_peak),
            "cpu_gib_per_node": _gib(cpu_bytes),
            **_verdict(gpu_bytes / GIB, gpu_memory_gib, cpu_bytes / GIB, node_ram_gib),
        }
        plans.append({"stage": zero_stage, "offload": stage_offload, "deepspeed_full_finetune": full, "lora": lora})

    if settings.load_in_4bit:
        notes.append("4-bit (QLoRA) base weights: ZeRO-3 needs bnb_4bit_quant_storage set to the training dtype, "
                     "and zero.Init is skipped for quantized models.")
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
            lines.append(f"  {component['name']:<62} {component['where']:<5} {component['gib_per_gpu']:>11.2f} "
                         f"{component['gib_per_node']:>12.2f}")
        lines.append(f"  {'total GPU':<62} {'gpu':<5} {lora['gpu_gib_per_gpu']:>11.2f} {lora['gpu_gib_per_node']:>12.2f}")
        lines.append(f"  {'total CPU RAM (steady)':<62} {'cpu':<5} {'':>11} {lora['cpu_steady_gib_per_node']:>12.2f}")
        if lora["cpu_load_peak_gib_per_node"]:
            lines.append(f"  {'CPU RAM peak at model load (every rank holds a full copy)':<62} {'cpu':<5} {'':>11} "
                         f"{lora['cpu_load_peak_gib_per_node']:>12.2f}")
        tight = " - tight, under 10% headroom" if lora["fits_gpu"] and lora["gpu_headroom_gib"] < 0.1 * setup[
            "gpu_memory_gib"] else ""
        lines.append(
            f"fits: {_yes(lora['fits'])} ({lora['gpu_gib_per_gpu']:.1f} of {setup['gpu_memory_gib']:g} GiB per GPU{tight}; "
            f"CPU RAM {lora['cpu_gib_per_node']:.1f} of {setup['node_ram_gib']:g} GiB per node: {_yes(lora['fits_node_ram'])})"
        )
    for note in plan["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from soo.core.cli import non_negative_float, positive_float, positive_int

    parser = argparse.ArgumentParser(
        prog="python -m soo.tools.memory",
        description="Per-GPU and per-node memory of a LoRA + SOO run under DeepSpeed ZeRO-2/3 (no weights needed).",
    )
    parser.add_argument("config", help="A configs/*.yaml file.")
    parser.add_argument("--gpus", type=positive_int, required=True, help="GPUs per node.")
    parser.add_argument("--nodes", type=positive_int, required=True, help="Number of nodes.")
    parser.add_argument("--stage", choices=STAGES, default="both", help="ZeRO stage (default: both).")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                        help="Move the optimizer state (and, ZeRO-3 only, the parameters) to CPU RAM.")
    parser.add_argument("--gpu_memory_gib", type=positive_float, default=DEFAULT_GPU_MEMORY_GIB,
                        help="Memory of one GPU (default 32: V100-32GB as on CSC Puhti).")
    parser.add_argument("--node_ram_gib", type=positive_float, default=DEFAULT_NODE_RAM_GIB,
                        help="CPU RAM of one node (default 384, CSC Puhti).")
    parser.add_argument("--seq_len", type=positive_int, default=None, help="Tokens per row (default: the config's max_length, else 256).")
    parser.add_argument("--micro_batch", type=positive_int, default=None,
                        help="Pairs per GPU per step (default: the config's per_device_train_batch_size).")
    parser.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default=None,
                        help="Training dtype (default: the config's dtype/bf16/fp16).")
    parser.add_argument("--load_in_4bit", action=argparse.BooleanOptionalAction, default=None,
                        help="4-bit (QLoRA) base weights (default: the config's load_in_4bit).")
    parser.add_argument("--overhead_gib", type=non_negative_float, default=CUDA_OVERHEAD_GIB,
                        help="Fixed per-GPU CUDA/NCCL/workspace overhead (default 1).")
    parser.add_argument("--json", action="store_true", help="Print the plan as JSON.")
    args = parser.parse_args(argv)
    try:
        plan = plan_memory(
            args.config, gpus=args.gpus, nodes=args.nodes, stage=args.stage, offload=args.offload,
            gpu_memory_gib=args.gpu_memory_gib, node_ram_gib=args.node_ram_gib, seq_len=args.seq_len,
            micro_batch=args.micro_batch, dtype=args.dtype, load_in_4bit=args.load_in_4bit,
            overhead_gib=args.overhead_gib,
        )
    except MemoryPlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
