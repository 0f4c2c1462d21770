"""SOO in reinforcement learning: the physical deception task (the paper's first experiment).

Trains MADDPG deceptive and honest baselines on a 1-vs-1, two-landmark mpe2 scenario, fine-tunes
the deceptive one with SOO (and two controls), measures behaviour and the SOO classifier, on the
basic task and on the critique's hidden-hazard variant. CPU only; one seed takes 14-33 min of one
core, by protocol, definitions and variants (measured: docs/guides/rl.md#compute-per-seed).

  python rl_deception.py all --seeds 0 1 2 --jobs 2          # seeds as separate processes, then the report
  python rl_deception.py all --quick --seeds 0 1             # smoke run (~30 s; plumbing only)
  python rl_deception.py run --seed 3 --output_dir results/rl   # one seed (e.g. one Slurm array task)
  python rl_deception.py all --seeds 0 1 2 3 4 5 --soo_definitions authors masked --protocol co-trained
  python rl_deception.py all --classifier_only --seeds 0-23 --variants basic --protocol co-trained   # the SOO classifier, 24 x 24 pairs
  python rl_deception.py report --output_dir results/rl         # report.md (+ classifier.md) + PNGs over every run found

--protocol: frozen-red (ours, default) or co-trained (the paper's); --soo_definitions: authors
(default) and/or masked, sharing one seed's baselines; --env_preset: ours or paper (soo.rl.env).
Outputs in --output_dir (default results/rl): seed_N/<variant>/<protocol>/{honest,deceptive,mse}/ and
seed_N/<variant>/<protocol>/<definition>/{soo,random,soo_only,eval}/ (stages: checkpoint/, curve.csv),
seed_N/results_<protocol>_<definition>.json, report.md, summary.json and per run
<protocol>_<definition>_{learning_curves,classifier_accuracy,behaviour}.png. --classifier_only
trains only the baselines (the same folders) and writes seed_N/classifier_<protocol>_<definition>.json;
the report then adds classifier.md, classifier_summary.json and <protocol>_<definition>_classifier_{only,soo_values}.png.
A finished stage is reused when a seed is run again (delete its folder to retrain); a stage
trained with other settings than the run asks for is an error, not silently reused. Bad input
(a number out of range, an output folder that cannot be created, no results to report on) exits
with status 2 and one line `error: ...` on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from soo.core.cli import CommandParser, fail, non_negative_float, positive_float, positive_int

CLASSIFIER_EVAL_EPISODES = 4000  # --classifier_only: pools of 4000 let the classifier use n up to 2000


@dataclass
class SeedOptions:
    """The settings of `run` and `all`. None: RLExperimentConfig's default for the protocol (or
    --quick's sizes), or the environment preset's."""

    output_dir: str = field(
        default="results/rl",
        metadata={"help": "folder for the seeds' checkpoints, results and the report (default results/rl)"},
    )
    quick: bool = field(default=False, metadata={"help": "smoke-run sizes: checks plumbing, does not learn the task"})
    protocol: str | None = field(
        default=None,
        metadata={
            "choices": ["frozen-red", "co-trained"],
            "help": "frozen-red (default): the deceptive blue trains against the honest pair's red, frozen; "
            "co-trained (the paper's): both agents learn in every stage",
        },
    )
    soo_definitions: list[str] | None = field(
        default=None,
        metadata={
            "choices": ["authors", "masked"],
            "help": "what self and other are for SOO (default: authors); several share one seed's baselines",
        },
    )
    soo_distance: str | None = field(
        default=None,
        metadata={
            "choices": ["mse", "log_mse"],
            "help": "the SOO fine-tuning term: mean MSE (default) or the authors' log(MSE + 1e-25)",
        },
    )
    env_preset: str | None = field(
        default=None,
        metadata={
            "choices": ["ours", "paper"],
            "help": "ours (default: radius 0.75, dense rewards) or paper (radius 0.125, sparse rewards)",
        },
    )
    honest_episodes: int | None = field(
        default=None,
        metadata={
            "type": positive_int,
            "help": "honest blue + red co-training (default: 10000 frozen-red, 25000 co-trained)",
        },
    )
    deceptive_episodes: int | None = field(
        default=None,
        metadata={"type": positive_int, "help": "deceptive blue (default: 30000 frozen-red, 25000 co-trained)"},
    )
    finetune_episodes: int | None = field(
        default=None,
        metadata={
            "type": positive_int,
            "help": "per fine-tuned condition (default: 5000 frozen-red, 10000 co-trained)",
        },
    )
    eval_episodes: int | None = field(
        default=None, metadata={"type": positive_int, "help": "greedy evaluation episodes per condition (default 1000)"}
    )
    soo_weight: float | None = field(
        default=None,
        metadata={"type": non_negative_float, "help": "weight of the SOO (and random-control) term (default 1.0)"},
    )
    mse_weight: float | None = field(
        default=None, metadata={"type": non_negative_float, "help": "weight of the action-MSE term (default 1.0)"}
    )
    visibility_radius: float | None = field(
        default=None,
        metadata={
            "type": positive_float,
            "help": "agents see each other within this distance (default: the preset's, 0.75 or 0.125)",
        },
    )
    variants: list[str] | None = field(default=None, metadata={"choices": ["basic", "hazard"], "help": "default: both"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bars (logs of parallel seeds)"})
    classifier_only: bool = field(
        default=False,
        metadata={
            "help": "only the honest and deceptive baselines and their per-episode SOO, for the SOO classifier over many "
            f"seeds (no fine-tuning; --eval_episodes default {CLASSIFIER_EVAL_EPISODES})"
        },
    )


def seed_list(text: str) -> list[int]:
    """An argparse type: one seed (7) or an inclusive range (0-39)."""
    first, dash, last = text.partition("-")
    try:
        seeds = list(range(int(first), int(last) + 1)) if dash else [int(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed or a range like 0-39, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"empty range {text!r}")
    return seeds


def build_config(args):
    from soo.rl.config import RLExperimentConfig
    from soo.rl.env import ENV_PRESETS

    experiment_fields = {f.name for f in dataclasses.fields(RLExperimentConfig)}
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SeedOptions)
        if f.name in experiment_fields and getattr(args, f.name) is not None
    }  # None: the config's own
    if args.classifier_only and args.eval_episodes is None and not args.quick:
        options["eval_episodes"] = CLASSIFIER_EVAL_EPISODES
    for name in ("variants", "soo_definitions"):
        if options.get(name):
            options[name] = tuple(options[name])
        else:
            options.pop(name, None)
    try:  # the configs check their own values (ValueError)
        env = ENV_PRESETS[args.env_preset or "ours"]
        if args.visibility_radius is not None:
            env = replace(env, visibility_radius=args.visibility_radius)
        options["env"] = env
        return RLExperimentConfig.quick(**options) if args.quick else RLExperimentConfig(**options)
    except ValueError as error:
        sys.exit(fail(error))


def make_output_dir(output_dir: str) -> None:
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(output_dir) else ""
        sys.exit(fail(f"cannot create the output folder {output_dir}: {error.strerror or error}{where}"))


def run_one(args) -> None:
    import torch

    from soo.rl.seed import run_classifier_seed, run_seed
    from soo.rl.stages import StageMismatch

    torch.set_num_threads(1)  # 64-unit networks: extra threads only add overhead; seeds run in parallel instead
    config = build_config(args)
    make_output_dir(args.output_dir)
    started = time.time()
    try:
        if args.classifier_only:
            data = run_classifier_seed(config, args.seed, args.output_dir, progress=not args.no_progress)
        else:
            results = run_seed(config, args.seed, args.output_dir, progress=not args.no_progress)
    except StageMismatch as error:
        sys.exit(fail(error))
    print(
        f"seed {args.seed} done in {(time.time() - started) / 60:.1f} min -> {Path(args.output_dir) / f'seed_{args.seed}'}"
    )
    if args.classifier_only:
        for tag, result in data.items():
            for variant, block in result["variants"].items():
                means = {b: np.nanmean(np.asarray(block[b]["soo"], dtype=float)) for b in ("honest", "deceptive")}
                print(
                    f"  {config.protocol} {tag} {variant}: mean SOO honest {means['honest']:.5f}, deceptive {means['deceptive']:.5f}"
                )
        return
    for tag, result in results.items():
        print(f"  {config.protocol}, SOO definition {tag}:")
        for variant, block in result["variants"].items():
            for condition, evaluation in block["conditions"].items():
                s = evaluation["summary"]
                print(
                    f"  {variant:6s} {condition:9s} red at non-goal {100 * s['red_trapped']:5.1f}%  blue dist {s['blue_goal_distance']:.3f}  "
                    f"= honest {100 * s['agreement_honest']:5.1f}%  = deceptive {100 * s['agreement_deceptive']:5.1f}%  SOO {s['soo']:.5f}"
                )


def forwarded_options(args) -> list[str]:
    """The options of `all` (SeedOptions, from flags or --config), as `run` flags for each seed's process."""
    options = []
    for name in (f.name for f in dataclasses.fields(SeedOptions)):
        value = getattr(args, name)
        if isinstance(value, bool):
            options += [f"--{name}"] if value else []
        elif isinstance(value, list):
            options += [f"--{name}", *value] if value else []
        elif value is not None:
            options += [f"--{name}", str(value)]
    return options


def run_all(args) -> None:
    build_config(args)  # the seeds' processes would each refuse bad settings; refuse them once, here
    base = forwarded_options(args)
    make_output_dir(args.output_dir)
    pending, running, failed = list(args.seeds), [], []
    started = time.time()
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            log = Path(args.output_dir) / f"seed_{seed}.log"
            cmd = [sys.executable, __file__, "run", "--seed", str(seed), "--no_progress", *base]
            print(f"seed {seed}: {' '.join(cmd[1:])}  (log {log})", flush=True)
            # Append: a rerun (which reuses finished stages) must not erase the log of the first training.
            running.append((seed, time.time(), subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT)))
        time.sleep(1)
        for entry in list(running):
            seed, seed_started, proc = entry
            if proc.poll() is not None:
                running.remove(entry)
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see seed_{seed}.log)"
                print(
                    f"seed {seed}: {status} in {(time.time() - seed_started) / 60:.1f} min "
                    f"({(time.time() - started) / 60:.1f} min since the first seed started)",
                    flush=True,
                )
                if proc.returncode != 0:
                    failed.append(seed)
    if failed:
        sys.exit(f"seeds {failed} failed; the report was not written")
    report(args)


def report(args) -> None:
    from soo.rl.report import write_classifier_report, write_report

    paths = []
    try:
        paths.append(write_classifier_report(args.output_dir))
        paths.append(write_report(args.output_dir))
    except FileNotFoundError as error:  # no seed_*/results_*.json: fine when there is classifier data
        if paths[0] is None:
            sys.exit(fail(f"{error} (or `run --classifier_only` for seed_*/classifier_*.json)"))
    except OSError as error:
        sys.exit(fail(error))
    paths = [path for path in paths if path is not None]  # no classifier data: no classifier.md
    for path in paths:
        print(path.read_text())
    for path in paths:
        print(f"report: {path}")


def build_parser() -> CommandParser:
    """`run` and `all` take SeedOptions' fields as flags; every subcommand reads --config FILE.yaml."""
    parser = CommandParser(reads_config=False, prog="rl_deception.py", description=__doc__)
    commands = parser.add_commands()
    p_run = commands.add_parser("run", dataclass_types=SeedOptions, help="train, fine-tune and evaluate one seed")
    p_run.add_argument("--seed", type=int, default=0, help="the seed to train (default 0)")
    p_all = commands.add_parser(
        "all", dataclass_types=SeedOptions, help="several seeds as separate processes, then the report"
    )
    p_all.add_argument(
        "--seeds",
        type=seed_list,
        nargs="+",
        default=[[0, 1, 2]],
        help="the seeds to train: numbers and inclusive ranges, e.g. 0 1 2 or 0-39 (default 0 1 2)",
    )
    p_all.add_argument("--jobs", type=positive_int, default=2, help="seeds run at once, one CPU core each (default 2)")
    p_report = commands.add_parser(
        "report", help="report.md (and classifier.md) with plots over every run in --output_dir"
    )
    p_report.add_argument(
        "--output_dir",
        default="results/rl",
        help="the folder `run` or `all` wrote the seeds to; the report goes there (default results/rl)",
    )
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "all":
        args.seeds = list(dict.fromkeys(seed for group in args.seeds for seed in group))
    {"run": run_one, "all": run_all, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
