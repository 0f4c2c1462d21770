"""Tiny random-weight models of the supported architectures, with a tokenizer built offline.

For tests and for smoke-testing a launcher (e.g. on an HPC login node) without downloading
anything:

    python -m soo.tools.tiny_model /tmp/tiny-llama --arch llama
    python finetuning.py --model_name_or_path /tmp/tiny-llama --soo_layers 2 --max_steps 5 --use_cpu

The tokenizer is a byte-level BPE (every string encodes, no unknown tokens) trained in a second
on prompts from our own generator, with a minimal chat template. The models keep each
architecture's real module layout (`model.layers[i].self_attn.o_proj`, Gemma-2's soft-capping,
Gemma-3's sliding/full attention mix) at a few hundred thousand parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from soo.core.cli import CommandParser, fail

ARCHITECTURES = ("llama", "mistral", "gemma2", "gemma3", "qwen2")
TINY_NUM_LAYERS = 4

_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on generated SOO prompts; deterministic, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from soo.data.pair_generation import generate_pairs

    corpus = []
    for split in ("train", "test"):
        for record in generate_pairs(n=400, seed=0, split=split):
            corpus += [record["self_prompt"], record["other_prompt"]]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, bpe_trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=_SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def tiny_config(arch: str, vocab_size: int):
    """A config of the real architecture class, shrunk to a few hundred thousand parameters."""
    import transformers

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=TINY_NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "mistral":
        return transformers.MistralConfig(**common, sliding_window=64)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common)
    if arch == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=32)
    if arch == "gemma3":
        return transformers.Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=32)
    raise ValueError(f"Unknown architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}.")


def build_tiny_model(arch: str, vocab_size: int, seed: int = 0):
    """A random-weight causal LM of `arch` (seeded, fp32)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, vocab_size)
    if arch == "gemma2":
        config._attn_implementation = "eager"  # soft-capping needs eager attention
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def write_tiny_model(out_dir: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny model and its tokenizer to `out_dir`, loadable with `from_pretrained`."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    model = build_tiny_model(arch, vocab_size=len(tokenizer), seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description="Write a tiny random-weight model and an offline tokenizer.")
    parser.add_argument("out_dir", metavar="OUTPUT_DIR", help="Directory to write (created if missing).")
    parser.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="llama",
        help="Architecture whose module layout the model keeps (default: llama).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default: 0).")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    # Checked before building anything: given a file, transformers only logs and writes no model.
    if out_dir.exists() and not out_dir.is_dir():
        return fail(f"the output folder {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(out_dir) else ""
        return fail(f"cannot create the output folder {out_dir}: {error.strerror or error}{where}")
    path = write_tiny_model(out_dir, args.arch, args.seed)
    print(f"Wrote a tiny {args.arch} model ({TINY_NUM_LAYERS} layers) and tokenizer to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
