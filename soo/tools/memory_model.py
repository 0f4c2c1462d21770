"""What a memory plan is about: the run's settings (a configs/*.yaml file read with finetuning.py's
defaults), the model's architecture (a local directory, the Hugging Face cache or a copy bundled
in soo/tools/model_configs/, never the network) and its exact parameter counts, LoRA included,
on a meta-device model (shapes only, no memory used).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
EMBEDDED_ARCHITECTURE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what soo.core.modeling's embedded default is
DEFAULT_SEQ_LEN = 256  # DataArguments.max_length's default
DEFAULT_MICRO_BATCH = 8  # transformers' per_device_train_batch_size default, when a config sets none


class MemoryPlanError(ValueError):
    """A planner input is wrong or cannot be resolved; the message says what to do."""


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
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(ModelArguments)
    }
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
        activation_checkpointing=bool(
            values.get("activation_checkpointing", values.get("gradient_checkpointing", False))
        ),
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
    from soo.core.modeling import peft_target_modules

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
