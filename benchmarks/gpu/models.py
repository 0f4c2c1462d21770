"""The models the GPU check runs: random-weight models of real architectures (bundled configs in
soo/tools/model_configs) or, for --dry_run, tiny ones of the same classes, and synthetic pairs."""

from __future__ import annotations

import torch

MODELS = {"gemma2-2b": "google/gemma-2-2b-it", "llama-1b": "meta-llama/Llama-3.2-1B-Instruct"}
DRY_RUN_ARCHITECTURES = {"gemma2-2b": "gemma2", "llama-1b": "llama"}  # soo.tools.tiny_model stand-ins
THROUGHPUT_MODEL = "llama-1b"
TINY_VOCAB = 1024


def model_config(name: str, dry_run: bool):
    """The architecture config of `name`: the bundled real one, or a tiny one of the same class."""
    if dry_run:
        from soo.tools.tiny_model import tiny_config

        return tiny_config(DRY_RUN_ARCHITECTURES[name], TINY_VOCAB)
    from soo.tools.memory_model import bundled_config_path, load_bundled_config

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
    (a name swap): every row is seq_len long, which is what soo.tools.memory's estimate assumes."""
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


def throughput_model(args, device: torch.device):
    from soo.tools.tiny_model import build_tokenizer

    config = model_config(THROUGHPUT_MODEL, args.dry_run)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(config, dtype, device, args.seed).eval()
    # An offline byte-level BPE (soo.tools.tiny_model): real prompts, token counts close to a real
    # tokenizer's; ids the model emits beyond its vocabulary decode to nothing.
    return model, build_tokenizer(TINY_VOCAB), dtype
