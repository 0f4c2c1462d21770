"""The memory arithmetic of a plan (bytes per GPU and per node), for one ZeRO stage.

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
"""

from __future__ import annotations

import contextlib
import sys

from soo.tools.memory_model import MemoryPlanError, ModelCounts, RunSettings

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CUDA_OVERHEAD_GIB = 1.0
HOST_PROCESS_GIB = 3.0  # RSS of one training process: Python, torch, CUDA libraries, tokenizer, data

# bitsandbytes NF4 with double quantization: 4 bits + an 8-bit absmax per 64 weights + an fp32
# constant per 256 of those = 4.127 bits per weight.
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
# DeepSpeed's mixed-precision accounting (its ZeRO-2 estimator's comment), per trainable param.
LORA_BYTES_16BIT = {"weight": 2, "grad": 2, "optimizer": 4 + 4 + 4 + 4}  # fp32 master, fp32 grad, m, v
LORA_BYTES_FP32 = {"weight": 4, "grad": 4, "optimizer": 4 + 4}  # m, v (the weight is the master)
ADDITIONAL_BUFFER_FACTOR = 1.5  # DeepSpeed's estimator default


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


def deepspeed_full_finetune_estimate(
    stage: int, total_params: int, largest_layer_params: int, gpus_per_node: int, nodes: int, offload: str
) -> dict:
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
    return {
        "gpu_bytes_per_gpu": int(gpu_bytes),
        "cpu_bytes_per_node": int(cpu_bytes),
        "largest_layer_memory": largest_layer_memory,
    }


def to_gib(num_bytes: float) -> float:
    return round(num_bytes / GIB, 4)


def _component(key: str, name: str, where: str, per_gpu: float, per_node: float) -> dict:
    """One row of the table: `key` is stable for code, `name` is for people; where is gpu or cpu."""
    return {
        "key": key,
        "name": name,
        "where": where,
        "bytes_per_gpu": int(per_gpu),
        "bytes_per_node": int(per_node),
        "gib_per_gpu": to_gib(per_gpu),
        "gib_per_node": to_gib(per_node),
    }


def base_weight_bytes(counts: ModelCounts, dtype_bytes: int, load_in_4bit: bool) -> float:
    if not load_in_4bit:
        return counts.total_params * dtype_bytes
    rest = counts.total_params - counts.quantizable_params
    # peft's prepare_model_for_kbit_training (soo.core.modeling.add_lora) casts every weight that is
    # not 4-bit (embeddings, norms, output layer) to fp32; measured on an H200 (docs/benchmarks/gpu.md).
    return counts.quantizable_params * NF4_BYTES_PER_PARAM + rest * DTYPE_BYTES["float32"]


def activation_bytes(
    counts: ModelCounts,
    rows: int,
    seq_len: int,
    dtype_bytes: int,
    checkpointing: bool,
    eager_attention: bool,
    soo_layers: int,
) -> dict[str, float]:
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


def lora_aware_estimate(
    stage: int,
    offload: str,
    counts: ModelCounts,
    settings: RunSettings,
    gpus_per_node: int,
    nodes: int,
    overhead_gib: float,
) -> list[dict]:
    """Per-GPU and per-node components (bytes) of a LoRA run under ZeRO-`stage`."""
    from soo.core.modeling import EAGER_ATTENTION_MODEL_TYPES

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
        components.append(
            _component(
                "base_weights",
                f"frozen base weights ({weight_label}), 1/{gpus} partition",
                "cpu" if offload_params else "gpu",
                share,
                share * gpus_per_node,
            )
        )
        layer_bytes = b
        if settings.load_in_4bit:  # NF4, or fp32 for what 4-bit loading leaves unquantized (see base_weight_bytes)
            layer_bytes = NF4_BYTES_PER_PARAM if counts.largest_layer_quantizable else DTYPE_BYTES["float32"]
        gathered = 2 * counts.largest_layer_params * layer_bytes
        short_name = ".".join(counts.largest_layer_name.split(".")[-1:]) or "model"
        components.append(
            _component(
                "gathered_params",
                f"gathered params: 2 x largest layer ({short_name})",
                "gpu",
                gathered,
                gathered * gpus_per_node,
            )
        )
    else:
        components.append(
            _component(
                "base_weights",
                f"frozen base weights ({weight_label}), whole copy",
                "gpu",
                weights,
                weights * gpus_per_node,
            )
        )

    # LoRA weights and gradients: partitioned by ZeRO-3, whole under ZeRO-2.
    lora_16 = counts.lora_params * (lora_bytes["weight"] + lora_bytes["grad"])
    lora_16_share = lora_16 / gpus if stage == 3 else lora_16
    components.append(
        _component(
            "lora_weights_grads",
            "LoRA weights + grads",
            "cpu" if offload_params else "gpu",
            lora_16_share,
            lora_16_share * gpus_per_node,
        )
    )
    optimizer_share = counts.lora_params * lora_bytes["optimizer"] / gpus  # ZeRO-2 and -3 partition it
    optimizer_label = "LoRA optimizer state (fp32 master+grad, Adam m+v)" if b == 2 else "LoRA Adam m+v (fp32)"
    components.append(
        _component(
            "lora_optimizer",
            optimizer_label,
            "cpu" if offload_optimizer else "gpu",
            optimizer_share,
            optimizer_share * gpus_per_node,
        )
    )

    rows = 2 * settings.micro_batch
    eager = settings.attn_implementation == "eager" or (
        settings.attn_implementation is None and counts.model_type in EAGER_ATTENTION_MODEL_TYPES  # load_model's rule
    )
    acts = activation_bytes(
        counts, rows, settings.seq_len, b, settings.activation_checkpointing, eager, settings.soo_layers
    )
    stored_label = (
        "activations: layer-input checkpoints"
        if settings.activation_checkpointing
        else ("activations: all layers (no checkpointing)")
    )
    working_label = "activations: one layer's working set " + (
        "x2 (recompute + grads)" if settings.activation_checkpointing else "(its grads)"
    )
    logits_label = "logits (fp32 log-softmax + grads, " + (
        "2 soft-cap copies)" if counts.final_logit_softcapping else "16-bit copy)"
    )
    for key, label in (
        ("activations_stored", stored_label),
        ("activations_working", working_label),
        ("soo_capture", "SOO captured outputs"),
        ("logits", logits_label),
    ):
        value = acts[key.removeprefix("activations_")]
        components.append(_component(key, label, "gpu", value, value * gpus_per_node))
    overhead = overhead_gib * GIB
    components.append(
        _component("cuda_overhead", "CUDA context, workspaces, comm buffers", "gpu", overhead, overhead * gpus_per_node)
    )

    host = HOST_PROCESS_GIB * GIB
    components.append(
        _component("host_processes", "host processes (Python, torch, CUDA libs)", "cpu", host, host * gpus_per_node)
    )
    return components


def load_peak_bytes_per_node(stage: int, counts: ModelCounts, settings: RunSettings, gpus_per_node: int) -> float:
    """CPU RAM while the model loads: every ZeRO-2 rank builds the whole model before moving it."""
    if stage == 3 and not settings.load_in_4bit:
        return 0.0  # zero.Init: each rank materialises only its partition
    b = DTYPE_BYTES[settings.dtype]
    return gpus_per_node * counts.total_params * b + gpus_per_node * HOST_PROCESS_GIB * GIB
