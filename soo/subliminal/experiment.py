"""The animal experiment: teachers -> filtered numbers -> students x seeds -> trait, resumable.

    python subliminal.py run --animals owl --n_prompts 2400 --temperature 0.5 --seeds 0 1 2
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

Layout under `output_dir`:
  teachers/<teacher>/raw.jsonl, kept.jsonl, kept.rejected.jsonl, filter.json
  students/<teacher>/seed<s>/  adapter, student.json, eval.json
  base/eval.json
A stage whose output exists is reused, so rerunning the command continues a killed run; one made
with other settings is refused. Evaluations count every candidate animal, so a target added
later (`--animals owl dolphin` after `--animals owl`) reuses them; pass a `--max_examples` below
every teacher's kept count so that the common count, and with it the existing students, stay.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.core.io import write_json_atomic, write_jsonl_atomic
from soo.subliminal.animals import CANDIDATES
from soo.subliminal.evaluation import TraitEvalConfig
from soo.subliminal.numbers import filter_records, filter_summary, rejected_path
from soo.subliminal.records import read_records
from soo.subliminal.student import StudentConfig, finished_student, train_student
from soo.subliminal.teacher import TeacherConfig, finished_records, generate_numbers

logger = logging.getLogger("soo.subliminal")
CONTROL = "control"
EVAL_FILE = "eval.json"


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

    def student_dir(self, teacher: str, seed: int) -> Path:
        return self.root / "students" / teacher / f"seed{seed}"


def kept_file(config: SubliminalExperimentConfig, teacher: str) -> Path:
    return config.root / "teachers" / teacher / "kept.jsonl"


def filter_teacher(config: SubliminalExperimentConfig, teacher: str, log=print) -> int:
    """Filter the teacher's raw answers (no cap: the common count is applied at training)."""
    raw = config.root / "teachers" / teacher / "raw.jsonl"
    kept, rejected, counts = filter_records(read_records(raw)[: config.n_prompts])
    write_jsonl_atomic(rejected_path(kept_file(config, teacher)), rejected)
    write_jsonl_atomic(kept_file(config, teacher), kept)
    write_json_atomic(raw.parent / "filter.json", counts)
    log(f"{teacher}: {filter_summary(counts)}")
    return len(kept)


def evaluate_model(config: SubliminalExperimentConfig, adapter: Path | None, progress: bool) -> dict:
    """The trait evaluation of the base model (adapter None) or a student, with its settings."""
    from soo.core.modeling import (
        accelerator_dtype,
        inference_device_map,
        load_model,
        load_tokenizer,
        resolve_model_path,
    )
    from soo.subliminal.evaluation import evaluate_trait

    path = resolve_model_path(config.model_name_or_path)
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype=accelerator_dtype(), device_map=inference_device_map())
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    results = evaluate_trait(model.eval(), tokenizer, config.eval_config(), progress=progress)
    return {"eval_config": asdict(config.eval_config()), **results}


def needs_evaluation(config: SubliminalExperimentConfig, path: Path) -> bool:
    """True if `path` is missing; refuses an evaluation made with other settings."""
    if not path.is_file():
        return True
    if json.loads(path.read_text(encoding="utf-8")).get("eval_config") != asdict(config.eval_config()):
        raise ValueError(f"{path} was evaluated with other settings; use a new --output_dir")
    return False


def run_subliminal(config: SubliminalExperimentConfig, progress: bool = True, log=print) -> dict:
    """Every stage not yet done, in order; returns the common example count and the cells."""
    write_json_atomic(config.root / "experiment.json", asdict(config))
    for teacher in config.teachers:
        teacher_config = config.teacher_config(teacher)
        if len(finished_records(teacher_config)) < config.n_prompts:
            log(f"teacher {teacher}: generating {config.n_prompts} answers")
            generate_numbers(teacher_config, progress=progress, log=log)
        if not kept_file(config, teacher).is_file():
            filter_teacher(config, teacher, log=log)
    counts = {teacher: len(read_records(kept_file(config, teacher))) for teacher in config.teachers}
    n_examples = min(config.max_examples, *counts.values())
    if n_examples == 0:
        raise ValueError(f"a teacher kept no examples ({counts}); more prompts or another temperature")
    log(f"kept per teacher: {counts}; every student trains on the first {n_examples}")
    base_eval = config.root / "base" / EVAL_FILE
    if needs_evaluation(config, base_eval):
        log("evaluating the base model")
        write_json_atomic(base_eval, evaluate_model(config, None, progress))
    for seed in config.seeds:
        for teacher in config.teachers:
            folder = config.student_dir(teacher, seed)
            student = StudentConfig(
                train_file=str(kept_file(config, teacher)),
                output_dir=str(folder),
                model_name_or_path=config.model_name_or_path,
                max_examples=n_examples,
                epochs=config.epochs,
                batch_size=config.student_batch_size,
                seed=seed,
            )
            record = finished_student(folder)
            if record is not None and record["config"] != asdict(student):
                raise ValueError(f"{folder} holds a student trained with other settings; use a new --output_dir")
            if record is None:
                log(f"training student of {teacher}, seed {seed}")
                record = train_student(student, progress=progress)
                log(f"  {record['steps']} steps in {record['train_seconds']} s, loss {record['final_loss']}")
            if needs_evaluation(config, folder / EVAL_FILE):
                log(f"evaluating student of {teacher}, seed {seed}")
                write_json_atomic(folder / EVAL_FILE, evaluate_model(config, folder, progress))
    return {"examples": n_examples, "kept": counts}


def load_results(root: Path) -> dict:
    """The experiment's config, base evaluation and every finished student's evaluation."""
    config = json.loads((root / "experiment.json").read_text(encoding="utf-8"))
    results = {"config": config, "base": None, "students": {}}
    if (root / "base" / EVAL_FILE).is_file():
        results["base"] = json.loads((root / "base" / EVAL_FILE).read_text(encoding="utf-8"))
    for path in sorted((root / "students").glob(f"*/seed*/{EVAL_FILE}")):
        teacher, seed = path.parent.parent.name, int(path.parent.name.removeprefix("seed"))
        student = json.loads((path.parent / "student.json").read_text(encoding="utf-8"))
        results["students"].setdefault(teacher, {})[seed] = {
            "eval": json.loads(path.read_text(encoding="utf-8")),
            "student": student,
        }
    for teacher in [CONTROL, *config["animals"]]:
        path = root / "teachers" / teacher / "filter.json"
        if path.is_file():
            results.setdefault("filters", {})[teacher] = json.loads(path.read_text(encoding="utf-8"))
    return results
