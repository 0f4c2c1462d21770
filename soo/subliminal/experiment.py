"""The animal experiment: teachers -> filtered numbers -> students x seeds -> trait, resumable.

    python subliminal.py run --animals owl --n_prompts 2400 --temperature 0.5 --samples_per_question 20 \
        --seeds 0 1 2 --max_examples 300 --epochs 1      # the embedded model's run (docs/subliminal.md)
    python subliminal.py report --output_dir outputs/subliminal/smollm2

Conditions (the paper's design; a different-initialisation teacher is not available for the
embedded model, see docs/subliminal.md):
  base            the student model untrained
  control         students of the same model WITHOUT the trait (no system prompt): the control
                  that separates "trained on this model's numbers" from "trained on the trait's"
  <animal>        students of the teacher with the trait system prompt, one per target animal
Every teacher answers the same prompts (one prompt seed); every student gets the same number of
kept examples (the smallest teacher's count, at most `max_examples`) and the seeds are shared, so
trait and control students pair by seed.

The stages, their folders and their reuse are `soo.subliminal.pipeline`'s. Evaluations count
every candidate animal, so a target added later (`--animals owl dolphin` after `--animals owl`)
reuses them; pass a `--max_examples` below every teacher's kept count so that the common count,
and with it the existing students, stay.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.subliminal.animals import CANDIDATES
from soo.subliminal.evaluation import TraitEvalConfig
from soo.subliminal.pipeline import EXPERIMENT_FILE, Stages, load_cells, load_for_evaluation, run_stages
from soo.subliminal.teacher import TeacherConfig

CONTROL = "control"


@dataclass
class SubliminalExperimentConfig:
    """The whole animal experiment; `subliminal.py run`'s flags are its fields."""

    output_dir: str = field(default="outputs/subliminal/smollm2", metadata={"help": "the experiment's folder"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "teacher and student initialisation (default: embedded SmolLM2-135M)"}
    )
    animals: list[str] = field(default_factory=lambda: ["owl"], metadata={"nargs": "+", "help": "trait teachers"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"nargs": "+", "help": "student seeds"})
    n_prompts: int = field(default=30000, metadata={"help": "number prompts per teacher"})
    prompt_seed: int = field(default=0, metadata={"help": "the prompts (shared by all teachers) and their sampling"})
    temperature: float = field(default=1.0, metadata={"help": "teachers' sampling temperature"})
    teacher_batch_size: int = 48
    max_examples: int = field(default=10000, metadata={"help": "kept examples per student at most"})
    epochs: float = 3.0
    student_batch_size: int = 8
    samples_per_question: int = field(default=100, metadata={"help": "trait answers per question and model"})
    n_questions: int = 50

    def __post_init__(self):
        self.animals = [animal.strip().lower() for animal in self.animals]
        unknown = [animal for animal in self.animals if animal not in CANDIDATES]
        if unknown:
            raise ValueError(f"--animals {' '.join(unknown)}: not among the candidates ({', '.join(CANDIDATES)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--seeds must be one or more distinct integers")
        for name in ("n_prompts", "teacher_batch_size", "max_examples", "student_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ValueError(f"--epochs must be > 0, got {self.epochs}")
        self.eval_config()  # checks samples_per_question, n_questions, temperature

    @property
    def root(self) -> Path:
        return Path(self.output_dir)

    @property
    def teachers(self) -> list[str]:
        return [CONTROL, *self.animals]

    def teacher_config(self, teacher: str) -> TeacherConfig:
        return TeacherConfig(
            output_file=str(self.root / "teachers" / teacher / "raw.jsonl"),
            model_name_or_path=self.model_name_or_path,
            animal=None if teacher == CONTROL else teacher,
            n_prompts=self.n_prompts,
            seed=self.prompt_seed,
            temperature=self.temperature,
            batch_size=self.teacher_batch_size,
        )

    def eval_config(self) -> TraitEvalConfig:
        # Every candidate's rate is counted from the same answers: adding a target animal later
        # reuses every evaluation already made.
        return TraitEvalConfig(
            animals=list(CANDIDATES),
            samples_per_question=self.samples_per_question,
            n_questions=self.n_questions,
        )


def evaluate_model(config: SubliminalExperimentConfig, adapter: Path | None, progress: bool) -> dict:
    """The trait evaluation of the base model (adapter None) or a student."""
    from soo.subliminal.evaluation import evaluate_trait

    tokenizer, model = load_for_evaluation(config.model_name_or_path, adapter)
    return evaluate_trait(model, tokenizer, config.eval_config(), progress=progress)


def stages_of(config: SubliminalExperimentConfig) -> Stages:
    return Stages(
        root=config.root,
        teachers={teacher: config.teacher_config(teacher) for teacher in config.teachers},
        seeds=list(config.seeds),
        student_model=config.model_name_or_path,
        max_examples=config.max_examples,
        epochs=config.epochs,
        student_batch_size=config.student_batch_size,
        evaluate=lambda adapter, progress: evaluate_model(config, adapter, progress),
        eval_settings=asdict(config.eval_config()),
        record=asdict(config),
    )


def run_subliminal(config: SubliminalExperimentConfig, progress: bool = True, log=print) -> dict:
    """Every stage not yet done, in order; returns the common example count and the kept counts."""
    return run_stages(stages_of(config), progress=progress, log=log)


def load_results(root: Path) -> dict:
    """The experiment's config, base evaluation and every finished student's evaluation."""
    config = json.loads((root / EXPERIMENT_FILE).read_text(encoding="utf-8"))
    return {"config": config, **load_cells(root, [CONTROL, *config["animals"]])}
