"""Deceptive model organisms and the SOO experiment on them (the positive control SOO needs).

  # a model that deceives others but not itself (LoRA SFT on training-split prompts), checked by
  # the forced-choice score on test-split prompts; a few minutes on a 2-core CPU:
  python deception_experiment.py organism --kind asymmetric --output_dir outputs/organisms/asymmetric
  python deception_experiment.py organism --kind symmetric --output_dir outputs/organisms/symmetric

  # can the model tell who asks at the answer position? (last-token twin separation per layer)
  python deception_experiment.py separation --n 24

  # the experiment (SOO, LM-only, mismatched-pairs SOO, honest SFT as the positive control) x seeds,
  # resumable: finished cells are reused, a failed one is reported and rerun next time:
  python generate_data.py --split train --n 1000 --seed 0 --output_file data/soo_train.jsonl
  python generate_data.py --split test --n 200 --seed 0 --output_file data/soo_test.jsonl
  python generate_data.py --released --n 48 --output_file data/soo_train_released.jsonl
  python deception_experiment.py run --organism outputs/organisms/asymmetric --seeds 0 1 2
  python deception_experiment.py run --organism base --conditions soo_kl --seeds 0 1 2   # no organism
  python deception_experiment.py report --organisms outputs/organisms/asymmetric outputs/organisms/symmetric \
      --output_dir results/deception-experiment

A finished organism (organism.json in its folder) is reused; one made with other settings is refused.
What counts as an SOO effect was written down before the runs: see soo/organism/experiment.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from soo.core.cli import CommandParser, config_from, fail, positive_int


def build_parser() -> CommandParser:
    """`organism` takes OrganismConfig's fields as flags, `run` ExperimentConfig's; every subcommand
    reads --config FILE.yaml."""
    from soo.organism.config import ExperimentConfig
    from soo.organism.sft import OrganismConfig

    parser = CommandParser(
        reads_config=False,
        prog="deception_experiment.py",
        description="Deceptive model organisms and the SOO experiment on them.",
    )
    commands = parser.add_commands()
    organism = commands.add_parser(
        "organism", dataclass_types=OrganismConfig, help="LoRA-fine-tune the model into a deceptive organism"
    )
    # The folder follows --kind unless given (a YAML file or the flag).
    organism.set_defaults(output_dir=None)
    organism.add_argument("--no_progress", action="store_true", help="no progress bars")

    run = commands.add_parser(
        "run", dataclass_types=ExperimentConfig, help="every condition x seed on one organism (resumable)"
    )
    run.add_argument("--no_progress", action="store_true", help="no progress bars")

    separation = commands.add_parser(
        "separation",
        help="per layer: how far apart the last-token states of self/other twins are, vs the spread across instances",
    )
    separation.add_argument(
        "--model_name_or_path",
        default=None,
        help="model or organism's merged/ folder (default: the embedded SmolLM2-135M)",
    )
    separation.add_argument(
        "--n", type=positive_int, default=24, help="training-split instances, each in both room orders"
    )
    separation.add_argument("--answer_prefix", default=OrganismConfig.answer_prefix)

    report = commands.add_parser("report", help="report.md, summary.json and changes.png over organisms")
    report.add_argument(
        "--organisms",
        nargs="+",
        required=True,
        help="organism folders (their experiment/ is read), or 'base' (outputs/base-model/experiment)",
    )
    report.add_argument(
        "--reuse_summary",
        default=None,
        help="an earlier report's summary.json: conditions not found in the folders are taken from "
        "it, per organism name, marked '(earlier run)' (e.g. docs/results/deception-experiment/summary.json)",
    )
    report.add_argument("--output_dir", default="results/deception-experiment")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    from soo.core.modeling import ModelLoadError
    from soo.organism.sft import OrganismConfig, format_organism, make_organism

    if args.command == "organism":
        try:
            config = config_from(OrganismConfig, args, output_dir=args.output_dir or f"outputs/organisms/{args.kind}")
            record = make_organism(config, progress=not args.no_progress)
        except (ValueError, ModelLoadError) as error:
            return fail(error)
        print(format_organism(record))
    elif args.command == "separation":
        from soo.core.modeling import load_model, load_tokenizer, resolve_model_path
        from soo.organism.diagnostics import format_separation, last_token_states, twin_separation
        from soo.organism.sft import training_twins

        try:
            path = resolve_model_path(args.model_name_or_path)
            tokenizer, model = load_tokenizer(path), load_model(path, dtype="float32").eval()
        except (ValueError, ModelLoadError) as error:
            return fail(error)
        twins = training_twins(OrganismConfig(n_train_instances=args.n))
        states = [
            last_token_states(model, tokenizer, [twin[index] for twin in twins], args.answer_prefix) for index in (0, 1)
        ]
        print(
            f"{path}: {len(twins)} training-split twins ({args.n} instances x 2 room orders; other = main, "
            "self = main_self)"
        )
        print(format_separation(twin_separation(*states)))
    elif args.command == "run":
        from soo.organism.config import ExperimentConfig
        from soo.organism.experiment import run_experiment

        try:
            config = config_from(ExperimentConfig, args)
            for path in (config.finetuning_config, config.train_pairs, config.heldout_pairs, config.released_config):
                if not Path(path).is_file():
                    raise ValueError(f"{path}: no such file (generate the pairs first, see --help)")
            outcome = run_experiment(config, progress=not args.no_progress)
        except (ValueError, ModelLoadError) as error:
            return fail(error)
        if outcome["failed"]:
            print(
                "failed cells (rerun the same command to retry):\n  " + "\n  ".join(outcome["failed"]), file=sys.stderr
            )
            return 1
        if outcome["skipped"]:  # their results are the other runner's, not this run's
            print(
                "not run here, another runner holds them (rerun when it is done):\n  "
                + "\n  ".join(outcome["skipped"]),
                file=sys.stderr,
            )
            return 1
        print(f"done: {outcome['root']}")
    else:
        from soo.core.io import read_yaml
        from soo.organism.config import ExperimentConfig
        from soo.organism.report import markdown, write_report

        roots = {Path(folder).name: ExperimentConfig(organism_dir=folder).root for folder in args.organisms}
        missing = [str(root) for root in roots.values() if not (root / "organism").is_dir()]
        if missing:
            return fail(f"no experiment results in {', '.join(missing)} (run it first)")
        try:
            # JSON is YAML: one reader with one-line errors for both
            earlier = (
                read_yaml(args.reuse_summary, ValueError, f"--reuse_summary {args.reuse_summary}")
                if args.reuse_summary
                else None
            )
        except ValueError as error:
            return fail(error)
        summaries = write_report(roots, Path(args.output_dir), earlier)
        print(markdown(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
