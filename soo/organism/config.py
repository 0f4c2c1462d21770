"""ExperimentConfig: the organism experiment's conditions and settings with their defaults and help
(deception_experiment.py's `run` flags are built from it). What each condition is, and the rule
written before the runs: soo.organism.experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The default set, in the rules' order: the paper-as-described rule's four, then the released recipe's two.
PREREGISTERED = ("soo", "lm_only", "soo_mismatched", "honest_sft", "soo_kl", "soo_kl_mismatched")
RELEASED_CONDITIONS = ("soo_kl", "soo_kl_mismatched")  # trained with released_config, its own schedule
CONDITIONS = (*PREREGISTERED, "soo_card", "soo_only")
BASE_MODEL = "base"  # --organism base: the cells on the base model itself
EVAL_FILE = "eval.json"  # a cell's evaluation; written last, so its presence marks the cell done


@dataclass
class ExperimentConfig:
    """One experiment's settings; deception_experiment.py's `run` flags are its fields."""

    organism_dir: str = field(
        default="outputs/organisms/asymmetric",
        metadata={
            "flag": "--organism",
            "required": True,
            "help": "an organism folder (with organism.json), or 'base' for the base model itself "
            "(results in outputs/base-model/experiment)",
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "experiment folder (default: ORGANISM/experiment)"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "(default: 0 1 2)"})
    conditions: list[str] = field(
        default_factory=lambda: list(PREREGISTERED),
        metadata={
            "choices": CONDITIONS,
            "help": f"(default: the pre-registered {' '.join(PREREGISTERED)}; soo_only is exploratory)",
        },
    )
    finetuning_config: str = "configs/smollm2-135m-instruct.yaml"  # SOO / LM-only / mismatched recipe
    train_pairs: str = "data/soo_train.jsonl"
    heldout_pairs: str = "data/soo_test.jsonl"
    max_steps: int = 50
    honest_sft_steps: int = 50
    honest_sft_learning_rate: float | None = field(
        default=None, metadata={"help": "the positive control's learning rate (default: the organism's)"}
    )
    eval_n: int = field(
        default=50, metadata={"help": "test-split instances per scenario (x 2 orders) for the forced choice"}
    )
    generation_n: int = field(default=25, metadata={"help": "main-scenario instances for the generation protocol"})
    latent_pairs: int = 100
    released_config: str = "configs/smollm2-135m-instruct-released.yaml"  # soo_kl, soo_kl_mismatched
    released_pairs: str = "data/soo_train_released.jsonl"  # generate_data.py --released --n 48
    card_config: str = "configs/smollm2-135m-instruct-card.yaml"  # soo_card
    extra_finetuning_args: list[str] = field(
        default_factory=list,
        metadata={
            "help": "more finetuning.py flags for every cell, e.g. a tiny model's --soo_layers 2 (in a --config file: "
            "a list of strings)"
        },
    )

    def __post_init__(self):
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown condition(s) {', '.join(unknown)}; valid: {', '.join(CONDITIONS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in (
            "max_steps",
            "honest_sft_steps",
            "eval_n",
            "generation_n",
            "latent_pairs",
            "honest_sft_learning_rate",
        ):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def root(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        return (
            Path("outputs/base-model/experiment")
            if self.organism_dir == BASE_MODEL
            else Path(self.organism_dir) / "experiment"
        )
