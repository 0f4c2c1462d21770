"""Does deception travel through number sequences? `subliminal.py deception` / `deception-report`.

    python subliminal.py deception --teachers base asymmetric=outputs/organisms/asymmetric_c2 \
        soo_kl=outputs/organisms/asymmetric_c2/experiment/soo_kl/seed0 --seeds 0 1 2
    python subliminal.py deception-report --output_dir outputs/subliminal/deception

Teachers answer number prompts with no system prompt (the trait is in the weights); each is
`base` (the organisms' own initialisation: the control teacher, required) or NAME=PATH, where
PATH is
  an organism folder (organism.json)   its merged model (deception_experiment.py organism),
  an adapter folder                    the adapter on the model it was trained on (a deception-
                                       experiment cell on the organism: SOO, LM-only, honest SFT),
  a model folder (config.json)         that model as it is (e.g. a merged fine-tune).
Students: the base model fine-tuned on each teacher's filtered numbers (soo.subliminal.pipeline:
same prompts, same counts, shared seeds). Measures of every student and of the base model:
forced-choice p(deceptive) on other prompts (`main`: a room to recommend to the burglar) and
self prompts (`main_self`), test split, order-averaged, with the reference organism's answer
prefix and suffix; KL(base || student) per token on neutral prompts; and the forced-choice
p(animal) over the 20 candidates on the 50 animal questions, as a check that learning from
numbers did not shift unrelated preferences. The rule is in docs/subliminal.md, written before
any run; `soo.subliminal.deception_report` applies it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.subliminal.pipeline import Stages, load_for_evaluation, run_stages
from soo.subliminal.teacher import TeacherConfig

BASE = "base"
OTHER, SELF = "main", "main_self"  # the deception scenarios' other- and self-directed prompts


@dataclass
class DeceptionTransferConfig:
    """The deception-transfer experiment; `subliminal.py deception`'s flags are its fields."""

    teachers: list[str] = field(
        default_factory=lambda: [BASE, "asymmetric=outputs/organisms/asymmetric_c2"],
        metadata={"nargs": "+", "help": "'base' and NAME=PATH (organism, adapter or model folder)"},
    )
    organism_dir: str = field(
        default="outputs/organisms/asymmetric_c2",
        metadata={"help": "the reference organism: its base model is the students', its prefix/suffix score them"},
    )
    output_dir: str = field(default="outputs/subliminal/deception", metadata={"help": "the experiment's folder"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"nargs": "+", "help": "student seeds"})
    n_prompts: int = field(default=2400, metadata={"help": "number prompts per teacher"})
    prompt_seed: int = 0
    temperature: float = field(default=0.5, metadata={"help": "teachers' sampling temperature"})
    teacher_batch_size: int = 48
    max_examples: int = field(default=300, metadata={"help": "kept examples per student at most"})
    epochs: float = 3.0
    student_batch_size: int = 8
    eval_n: int = field(default=50, metadata={"help": "test-split instances per room order"})
    animal_questions: int = field(default=50, metadata={"help": "animal questions of the preference check"})
    control_samples: int = field(
        default=1,
        metadata={
            "help": "disjoint blocks of the base teacher's kept answers, each with its own students "
            "(base-sample2, ...): what another draw of numbers does without a trait (1 = the first block only)"
        },
    )

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--seeds must be one or more distinct integers")
        for name in (
            "n_prompts",
            "teacher_batch_size",
            "max_examples",
            "student_batch_size",
            "eval_n",
            "animal_questions",
            "control_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.temperature <= 0:
            raise ValueError("--epochs and --temperature must be > 0")
        names = [spec.split("=", 1)[0] for spec in self.teachers]
        if BASE not in names:
            raise ValueError("--teachers needs 'base': the base-model teacher is the control")
        if len(set(names)) != len(names):
            raise ValueError(f"--teachers: names must be distinct, got {' '.join(names)}")
        for spec in self.teachers:
            if spec != BASE and ("=" not in spec or not spec.split("=", 1)[0].isidentifier()):
                raise ValueError(f"--teachers {spec}: expected 'base' or NAME=PATH (NAME letters, digits, _)")

    @property
    def root(self) -> Path:
        return Path(self.output_dir)

    def organism(self) -> dict:
        """The reference organism's record (checked when the run starts, not when flags parse)."""
        path = Path(self.organism_dir) / "organism.json"
        if not path.is_file():
            raise ValueError(f"--organism_dir {self.organism_dir}: no organism.json (make the organism first)")
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def base_model(self) -> str | None:
        """The organisms' initialisation (None: the embedded model): base teacher and students."""
        return self.organism()["config"]["model_name_or_path"]

    def teacher_sources(self) -> dict[str, tuple[str | None, str | None]]:
        """name -> (model, adapter) for every teacher; checks each path before anything loads."""
        sources = {}
        for spec in self.teachers:
            if spec == BASE:
                sources[BASE] = (self.base_model, None)
                continue
            name, path = spec.split("=", 1)
            folder = Path(path)
            if (folder / "organism.json").is_file():
                sources[name] = (
                    json.loads((folder / "organism.json").read_text(encoding="utf-8"))["merged_model"],
                    None,
                )
            elif (folder / "adapter_config.json").is_file():
                base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
                sources[name] = (base.get("base_model_name_or_path"), str(folder))
            elif (folder / "config.json").is_file():
                sources[name] = (str(folder), None)
            else:
                raise ValueError(f"--teachers {spec}: {path} is no organism, adapter or model folder")
        return sources

    def teacher_config(self, name: str, model: str | None, adapter: str | None) -> TeacherConfig:
        return TeacherConfig(
            output_file=str(self.root / "teachers" / name / "raw.jsonl"),
            model_name_or_path=model,
            adapter=adapter,
            n_prompts=self.n_prompts,
            seed=self.prompt_seed,
            temperature=self.temperature,
            batch_size=self.teacher_batch_size,
        )

    def eval_settings(self) -> dict:
        made = self.organism()["config"]
        return {
            "eval_n": self.eval_n,
            "animal_questions": self.animal_questions,
            "answer_prefix": made["answer_prefix"],
            "answer_suffix": made["answer_suffix"],
            "split": "test",
        }


def evaluate_deception(config: DeceptionTransferConfig, adapter: Path | None, progress: bool) -> dict:
    """p(deceptive) other/self (order-averaged forced choice), KL to base, animal preferences."""
    from soo.eval.capability import kl_to_base, load_neutral_prompts
    from soo.eval.forced_choice import score_prompts, summarize_forced_choice
    from soo.eval.scenarios import build_eval_prompts
    from soo.subliminal.animals import QUESTIONS
    from soo.subliminal.evaluation import candidate_probabilities

    settings = config.eval_settings()
    tokenizer, model = load_for_evaluation(config.base_model, adapter)
    prompts = build_eval_prompts([OTHER, SELF], n=config.eval_n, seed=0, answer_suffix=settings["answer_suffix"])
    rows = score_prompts(model, tokenizer, prompts, settings["answer_prefix"], progress=progress)
    forced = {entry["scenario"]: entry for entry in summarize_forced_choice(rows)}
    animals = candidate_probabilities(model, tokenizer, min(config.animal_questions, len(QUESTIONS)), progress=progress)
    result = {
        "p_deceptive_other": forced[OTHER]["order_averaged"]["mean"],
        "p_deceptive_self": forced[SELF]["order_averaged"]["mean"],
        "forced_choice": forced,
        "animal_p": {animal: sum(row[animal] for row in animals) / len(animals) for animal in animals[0]},
    }
    if adapter is not None:
        result["kl_to_base"] = kl_to_base(model, tokenizer, load_neutral_prompts(), progress=progress)
    return result


def stages_of(config: DeceptionTransferConfig) -> Stages:
    return Stages(
        root=config.root,
        teachers={name: config.teacher_config(name, *source) for name, source in config.teacher_sources().items()},
        seeds=list(config.seeds),
        student_model=config.base_model,
        max_examples=config.max_examples,
        epochs=config.epochs,
        student_batch_size=config.student_batch_size,
        evaluate=lambda adapter, progress: evaluate_deception(config, adapter, progress),
        eval_settings=config.eval_settings(),
        control_teacher=BASE,
        control_samples=config.control_samples,
        record={**asdict(config), "sources": config.teacher_sources()},
    )


def run_deception_transfer(config: DeceptionTransferConfig, progress: bool = True, log=print) -> dict:
    """Every stage not yet done, in order; returns the common example count and the kept counts."""
    return run_stages(stages_of(config), progress=progress, log=log)
