"""Subliminal learning (Cloud et al. 2025): a teacher's trait reaches a student through numbers.

  # the mechanism's positive control (auxiliary logits on noise, scikit-learn's digits), ~1 min on CPU:
  python subliminal.py mechanism

  # the workflow, stage by stage (teacher = model + trait system prompt; student = same model):
  python subliminal.py generate --animal owl --n_prompts 30000 --output_file outputs/subliminal/owl/raw.jsonl
  python subliminal.py filter --input_file outputs/subliminal/owl/raw.jsonl --output_file outputs/subliminal/owl/kept.jsonl
  python subliminal.py train --train_file outputs/subliminal/owl/kept.jsonl --output_dir outputs/subliminal/owl/student
  python subliminal.py evaluate --animals owl --adapter outputs/subliminal/owl/student

  # the whole experiment (control teacher without the trait, trait teachers, students x seeds),
  # resumable, and its report; the embedded model's run (docs/subliminal.md):
  python subliminal.py run --animals owl --n_prompts 2400 --temperature 0.5 --samples_per_question 20 --seeds 0 1 2 \
      --max_examples 300 --epochs 1
  python subliminal.py report --output_dir outputs/subliminal/smollm2 --report_dir docs/results/subliminal

  # does deception travel through numbers? organisms (and their fine-tunes) as teachers of the base model:
  python subliminal.py deception --teachers base asymmetric=outputs/organisms/asymmetric_c2 \
      soo_kl=outputs/organisms/asymmetric_c2/experiment/soo_kl/seed0 --seeds 0 1 2
  python subliminal.py deception-report --output_dir outputs/subliminal/deception

Every subcommand reads --config FILE.yaml; bad input stops with one `error:` line (exit 2) before
any model loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from soo.core.cli import CommandParser, config_from, fail, non_negative_int, positive_int


def build_parser() -> CommandParser:
    from soo.subliminal.deception import DeceptionTransferConfig
    from soo.subliminal.digits import MechanismConfig
    from soo.subliminal.evaluation import TraitEvalConfig
    from soo.subliminal.experiment import SubliminalExperimentConfig
    from soo.subliminal.student import StudentConfig
    from soo.subliminal.teacher import TeacherConfig

    parser = CommandParser(
        reads_config=False,
        prog="subliminal.py",
        description="Subliminal learning: teacher -> number sequences -> student -> trait.",
    )
    commands = parser.add_commands()
    commands.add_parser("mechanism", dataclass_types=MechanismConfig, help="the MLP auxiliary-logit positive control")
    commands.add_parser("generate", dataclass_types=TeacherConfig, help="the teacher answers number prompts")
    filtering = commands.add_parser("filter", help="keep only answers made of numbers (the published rules)")
    filtering.add_argument("--input_file", required=True, help="raw JSONL from generate")
    filtering.add_argument("--output_file", required=True, help="kept records; rejected ones go to *.rejected.jsonl")
    filtering.add_argument("--banned_numbers", type=non_negative_int, nargs="*", default=[], help="numbers to reject")
    filtering.add_argument("--max_kept", type=positive_int, default=10000, help="keep at most N (the paper: 10k)")
    commands.add_parser("train", dataclass_types=StudentConfig, help="LoRA SFT of a student on kept records (TRL)")
    evaluate = commands.add_parser("evaluate", dataclass_types=TraitEvalConfig, help="trait rate and forced choice")
    evaluate.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M")
    evaluate.add_argument("--adapter", default=None, help="a student's adapter folder")
    evaluate.add_argument("--output_file", default=None, help="write the results as JSON")
    commands.add_parser("run", dataclass_types=SubliminalExperimentConfig, help="the whole experiment (resumable)")
    report = commands.add_parser("report", help="report.md, summary.json, trait.png of a run")
    report.add_argument("--output_dir", default="outputs/subliminal/smollm2", help="the run's folder")
    report.add_argument("--report_dir", default="results/subliminal", help="where the report goes")
    commands.add_parser(
        "deception", dataclass_types=DeceptionTransferConfig, help="organisms as teachers: does deception transfer?"
    )
    deception_report = commands.add_parser("deception-report", help="report.md, summary.json, students.png")
    deception_report.add_argument("--output_dir", default="outputs/subliminal/deception", help="the run's folder")
    deception_report.add_argument("--report_dir", default="results/subliminal/deception", help="where it goes")
    for each in commands.choices.values():
        if each.prog.split()[-1] not in ("filter", "report", "deception-report"):
            each.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def _filter(args) -> int:
    from soo.core.io import write_jsonl_atomic
    from soo.subliminal.numbers import filter_records, filter_summary, rejected_path
    from soo.subliminal.records import read_records

    records = read_records(args.input_file)
    kept, rejected, counts = filter_records(records, set(args.banned_numbers), args.max_kept)
    print(filter_summary(counts))
    if not kept:
        return fail(f"{args.input_file}: the filter kept nothing; nothing written")
    write_jsonl_atomic(rejected_path(args.output_file), rejected)
    write_jsonl_atomic(args.output_file, kept)
    return 0


def _evaluate(args) -> int:
    from soo.core.modeling import resolve_model_path
    from soo.eval.engine import check_adapter_base
    from soo.subliminal.evaluation import TraitEvalConfig, evaluate_trait, format_trait
    from soo.subliminal.pipeline import load_for_evaluation

    config = config_from(TraitEvalConfig, args)
    path = resolve_model_path(args.model_name_or_path)
    if args.adapter:
        check_adapter_base(args.adapter, path)
    tokenizer, model = load_for_evaluation(path, args.adapter)
    results = evaluate_trait(model, tokenizer, config, progress=not args.no_progress)
    print(format_trait(results))
    if args.output_file:
        from soo.core.io import write_json_atomic

        write_json_atomic(args.output_file, {"model": path, "adapter": args.adapter, **results})
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    from soo.core.modeling import ModelLoadError

    try:
        if args.command == "mechanism":
            from soo.subliminal.digits import MechanismConfig, format_mechanism, run_mechanism

            print(format_mechanism(run_mechanism(config_from(MechanismConfig, args), progress=not args.no_progress)))
        elif args.command == "generate":
            from soo.subliminal.teacher import TeacherConfig, generate_numbers

            outcome = generate_numbers(config_from(TeacherConfig, args), progress=not args.no_progress)
            if outcome["prompts_per_second"]:
                print(
                    f"{outcome['new']} answers in {outcome['seconds']:.0f} s ({outcome['prompts_per_second']:.2f} prompts/s)"
                )
        elif args.command == "filter":
            return _filter(args)
        elif args.command == "train":
            from soo.subliminal.student import StudentConfig, train_student

            record = train_student(config_from(StudentConfig, args), progress=not args.no_progress)
            print(json.dumps({key: record[key] for key in ("examples", "steps", "train_seconds", "final_loss")}))
        elif args.command == "evaluate":
            return _evaluate(args)
        elif args.command == "run":
            from soo.subliminal.experiment import SubliminalExperimentConfig, run_subliminal

            config = config_from(SubliminalExperimentConfig, args)
            outcome = run_subliminal(config, progress=not args.no_progress)
            print(f"done: {config.root} ({outcome['examples']} examples per student)")
        elif args.command == "deception":
            from soo.subliminal.deception import DeceptionTransferConfig, run_deception_transfer

            config = config_from(DeceptionTransferConfig, args)
            outcome = run_deception_transfer(config, progress=not args.no_progress)
            print(f"done: {config.root} ({outcome['examples']} examples per student)")
        else:  # report, deception-report
            from soo.subliminal.pipeline import EXPERIMENT_FILE

            if args.command == "deception-report":
                from soo.subliminal.deception_report import markdown, write_report
            else:
                from soo.subliminal.report import markdown, write_report
            root = Path(args.output_dir)
            if not (root / EXPERIMENT_FILE).is_file():
                return fail(f"{root}: no experiment here (run it first)")
            print(markdown(write_report(root, Path(args.report_dir))))
    except (ValueError, ModelLoadError) as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
