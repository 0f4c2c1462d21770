"""The staged run every subliminal experiment shares: teachers -> filter -> students x seeds -> evaluation.

Layout under `root`:
  teachers/<teacher>/raw.jsonl, kept.jsonl, kept.rejected.jsonl, filter.json
  students/<teacher>/seed<s>/  adapter, student.json, eval.json
  base/eval.json               the student model untrained
A stage whose output exists is reused, so rerunning continues a killed run; a stage made with
other settings (teacher sidecar, student.json's config, eval.json's settings) is refused. Every
teacher answers the same prompts; every student gets the same number of kept examples (the
smallest teacher's count, at most `max_examples`) and the seeds are shared, so students of two
teachers pair by seed. What a model is evaluated on is the experiment's `evaluate(adapter)`.
With `control_samples` K > 1 the control teacher's kept answers give K disjoint blocks of N:
students/<control>-sample<k>/ train on block k (teachers/<control>-sample<k>/kept.jsonl), and the
spread between blocks is the difference another draw of numbers makes without any trait.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from soo.core.cell_lock import CellLock
from soo.core.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from soo.subliminal.numbers import filter_records, filter_summary, rejected_path
from soo.subliminal.records import read_records
from soo.subliminal.student import StudentConfig, finished_student, train_student
from soo.subliminal.teacher import TeacherConfig, finished_records, generate_numbers

EVAL_FILE = "eval.json"
EXPERIMENT_FILE = "experiment.json"


@dataclass
class Stages:
    """One experiment's stages: its teachers, the students' settings and the evaluation."""

    root: Path
    teachers: dict[str, TeacherConfig]  # name -> how it generates (output_file under root)
    seeds: list[int]
    student_model: str | None  # the students' initialisation
    max_examples: int
    epochs: float
    student_batch_size: int
    evaluate: Callable[[Path | None, bool], dict]  # (adapter or None for the base, progress) -> results
    eval_settings: dict  # stored in every eval.json; another value is refused on reuse
    # The data-sample control: students of `control_teacher` on its 2nd..Kth disjoint block of N
    # kept answers, so that what another draw of numbers alone does can be seen beside each teacher.
    control_teacher: str | None = None
    control_samples: int = 1
    # The experiment's settings, written to EXPERIMENT_FILE once the checks that can refuse this run
    # passed: a refused invocation leaves the record of the run already there as it was.
    record: dict | None = None

    def sample_names(self) -> list[str]:
        """The control's extra samples as student groups (its first sample is the teacher's own)."""
        return [control_sample_name(self.control_teacher, k) for k in range(2, self.control_samples + 1)]

    def raw_file(self, teacher: str) -> Path:
        return self.root / "teachers" / teacher / "raw.jsonl"

    def kept_file(self, teacher: str) -> Path:
        return self.root / "teachers" / teacher / "kept.jsonl"

    def student_dir(self, teacher: str, seed: int) -> Path:
        return self.root / "students" / teacher / f"seed{seed}"


def control_sample_name(teacher: str, k: int) -> str:
    return f"{teacher}-sample{k}"


def write_control_samples(stages: Stages, n_examples: int) -> None:
    """kept.jsonl of each extra sample: block k of `n_examples` of the control's kept answers
    (answers (k-1)N+1..kN, disjoint from the first block every other student's N come from)."""
    kept = read_records(stages.kept_file(stages.control_teacher))
    if len(kept) < stages.control_samples * n_examples:
        raise ValueError(
            f"{stages.control_samples} control samples of {n_examples} need {stages.control_samples * n_examples} "
            f"kept answers; {stages.control_teacher} kept {len(kept)} (fewer samples, or more prompts)"
        )
    for k, name in enumerate(stages.sample_names(), start=2):
        block = kept[(k - 1) * n_examples : k * n_examples]
        path = stages.kept_file(name)
        if not path.is_file():
            write_jsonl_atomic(path, block)
        elif read_records(path) != block:
            raise ValueError(f"{path} holds another sample than the control's answers now give; use a new --output_dir")


def filter_teacher(stages: Stages, teacher: str, n_prompts: int, log=print) -> int:
    """Filter the teacher's first `n_prompts` answers (no cap: the common count applies at training)."""
    kept, rejected, counts = filter_records(read_records(stages.raw_file(teacher))[:n_prompts])
    write_jsonl_atomic(rejected_path(stages.kept_file(teacher)), rejected)
    write_jsonl_atomic(stages.kept_file(teacher), kept)
    write_json_atomic(stages.raw_file(teacher).parent / "filter.json", counts)
    log(f"{teacher}: {filter_summary(counts)}")
    return len(kept)


def needs_evaluation(stages: Stages, path: Path) -> bool:
    """True if `path` is missing; refuses an evaluation made with other settings."""
    if not path.is_file():
        return True
    if json.loads(path.read_text(encoding="utf-8")).get("eval_config") != stages.eval_settings:
        raise ValueError(f"{path} was evaluated with other settings; use a new --output_dir")
    return False


def load_for_evaluation(model_name_or_path: str | None, adapter: Path | None):
    """(tokenizer, model in eval mode): the students' model, with a student's adapter when given."""
    from soo.core.modeling import (
        accelerator_dtype,
        inference_device_map,
        load_model,
        load_tokenizer,
        resolve_model_path,
    )

    path = resolve_model_path(model_name_or_path)
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype=accelerator_dtype(), device_map=inference_device_map())
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return tokenizer, model.eval()


def _evaluate_into(stages: Stages, path: Path, adapter: Path | None, progress: bool) -> None:
    write_json_atomic(path, {"eval_config": stages.eval_settings, **stages.evaluate(adapter, progress)})


def run_stages(stages: Stages, progress: bool = True, log=print) -> dict:
    """Every stage not yet done, in order; returns the common example count and the kept counts."""
    for teacher, config in stages.teachers.items():
        if len(finished_records(config)) < config.n_prompts:
            log(f"teacher {teacher}: generating {config.n_prompts} answers")
            generate_numbers(config, progress=progress, log=log)
        if not stages.kept_file(teacher).is_file():
            filter_teacher(stages, teacher, config.n_prompts, log=log)
    counts = {teacher: len(read_records(stages.kept_file(teacher))) for teacher in stages.teachers}
    n_examples = min(stages.max_examples, *counts.values())
    if n_examples == 0:
        raise ValueError(f"a teacher kept no examples ({counts}); more prompts or another temperature")
    log(f"kept per teacher: {counts}; every student trains on the first {n_examples}")
    if stages.control_samples > 1:
        write_control_samples(stages, n_examples)
    base_needs_evaluation = needs_evaluation(stages, stages.root / "base" / EVAL_FILE)
    if stages.record is not None:
        write_json_atomic(stages.root / EXPERIMENT_FILE, stages.record)
    if base_needs_evaluation:
        log("evaluating the base model")
        _evaluate_into(stages, stages.root / "base" / EVAL_FILE, None, progress)
    skipped = []
    for seed in stages.seeds:
        for teacher in [*stages.teachers, *stages.sample_names()]:
            folder = stages.student_dir(teacher, seed)
            # Lock before the done check (soo.core.cell_lock): a student another runner holds is skipped.
            with CellLock(folder, f"student {teacher} seed {seed}", log) as lock:
                if lock.acquired:
                    _train_and_evaluate_student(stages, teacher, seed, n_examples, progress, log)
                else:
                    skipped.append(f"{teacher}/seed{seed}")
    if skipped:
        log(f"skipped {len(skipped)} student(s) another runner is training: {', '.join(skipped)}")
    return {"examples": n_examples, "kept": counts, "skipped": skipped}


def _train_and_evaluate_student(stages: Stages, teacher: str, seed: int, n_examples: int, progress: bool, log) -> None:
    """Train one student unless it is done (refusing one trained with other settings), then evaluate it."""
    folder = stages.student_dir(teacher, seed)
    student = StudentConfig(
        train_file=str(stages.kept_file(teacher)),
        output_dir=str(folder),
        model_name_or_path=stages.student_model,
        max_examples=n_examples,
        epochs=stages.epochs,
        batch_size=stages.student_batch_size,
        seed=seed,
    )
    record = finished_student(folder)
    if record is not None and record["config"] != asdict(student):
        raise ValueError(f"{folder} holds a student trained with other settings; use a new --output_dir")
    if record is None:
        log(f"training student of {teacher}, seed {seed}")
        record = train_student(student, progress=progress)
        log(f"  {record['steps']} steps in {record['train_seconds']} s, loss {record['final_loss']}")
    if needs_evaluation(stages, folder / EVAL_FILE):
        log(f"evaluating student of {teacher}, seed {seed}")
        _evaluate_into(stages, folder / EVAL_FILE, folder, progress)


def write_report_files(out_dir: Path, summary: dict, text: str) -> None:
    """An experiment report's summary.json and report.md (its plot is the report's own)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "report.md", text)


def load_cells(root: Path, teachers: list[str]) -> dict:
    """The base evaluation, every finished student's record and evaluation, and the filter counts."""
    results = {"base": None, "students": {}, "filters": {}}
    if (root / "base" / EVAL_FILE).is_file():
        results["base"] = json.loads((root / "base" / EVAL_FILE).read_text(encoding="utf-8"))
    for path in sorted((root / "students").glob(f"*/seed*/{EVAL_FILE}")):
        teacher, seed = path.parent.parent.name, int(path.parent.name.removeprefix("seed"))
        results["students"].setdefault(teacher, {})[seed] = {
            "eval": json.loads(path.read_text(encoding="utf-8")),
            "student": json.loads((path.parent / "student.json").read_text(encoding="utf-8")),
        }
    for teacher in teachers:
        path = root / "teachers" / teacher / "filter.json"
        if path.is_file():
            results["filters"][teacher] = json.loads(path.read_text(encoding="utf-8"))
    return results
