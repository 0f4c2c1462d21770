"""evaluate.py's settings: `EvalConfig` is the one place for their defaults; evaluate.py's flags
are built from its fields (soo.core.cli.CommandParser), and the engine runs from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from soo.core.cli import positive_int
from soo.eval.scenarios import SCENARIO_NAMES

PROTOCOLS = ("both", "forced_choice", "generation")


@dataclass
class EvalConfig:
    adapters: list[str] = field(
        default_factory=list, metadata={"nargs": "*", "help": "LoRA adapter directories from finetuning.py"}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "base model (default: the one the first adapter was trained on; else the embedded default)"},
    )
    scenarios: list[str] | None = field(
        default=None,
        metadata={"metavar": "NAME", "help": f"scenarios to run (default: all): {', '.join(SCENARIO_NAMES)}"},
    )
    n: int = field(default=250, metadata={"type": positive_int, "help": "prompts per scenario and room order"})
    seed: int = field(default=0, metadata={"help": "seed for sampling items and rooms"})
    max_new_tokens: int = field(
        default=24, metadata={"type": positive_int, "help": "tokens generated per response at most"}
    )
    batch_size: int = field(
        default=16, metadata={"type": positive_int, "help": "prompts per generation / scoring batch"}
    )
    answer_suffix: str | None = field(
        default=None,
        metadata={"help": "appended to every scenario (default: the adapter's config, else the room-name one)"},
    )
    protocol: str = field(
        default="both",
        metadata={
            "choices": PROTOCOLS,
            "help": "forced_choice: p(deceptive) from the options' log-probabilities (the headline); "
            "generation: greedy answers, classified; both (default): both, and their agreement",
        },
    )
    answer_prefix: str | None = field(
        default=None,
        metadata={
            "help": "forced choice scores the options after this answer start; {verb} = the scenario's "
            "question verb (default: the adapter's config, else 'I would {verb} the')"
        },
    )
    pairs_path: str | None = field(
        default=None,
        metadata={"help": "held-out pairs JSONL for latent SOO (default: --n_pairs generated test-split pairs)"},
    )
    n_pairs: int = field(
        default=200,
        metadata={
            "type": positive_int,
            "help": "generated held-out pairs for latent SOO when --pairs_path is not given",
        },
    )
    latent_all_layers: bool = field(default=False, metadata={"help": "latent SOO at every layer (a curve)"})
    capability: bool = field(
        default=True,
        metadata={
            "help": "the capability measures (KL to the base model on neutral prompts, perplexity), on by default",
            "negative_help": "skip the capability measures (KL to the base model on neutral prompts, perplexity); "
            "they run unless this flag is given",
        },
    )
    mt_bench_export: bool = field(
        default=False, metadata={"help": "also export answers to MT-Bench-style questions for an external judge"}
    )
    out_dir: str = field(
        default="results/eval",
        metadata={
            "flag": "--output_dir",
            "metavar": "OUTPUT_DIR",
            "help": "folder for the report, results and the generation cache (created if missing)",
        },
    )
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "evaluate an adapter on another base model than the one it was trained on"}
    )
