"""Sweeps: a grid of fine-tuning settings (layers x seeds x weights, plus control cells), each cell
trained with finetuning.py and evaluated with evaluate.py, resumable. The spec format is in
soo/sweep/grid.py; docs/guides/sweeps.md has the details.

  # every cell not done yet, one after another (or --jobs N at a time) on this machine:
  python sweep.py run configs/sweeps/smollm2-layers.yaml
  python sweep.py run configs/sweeps/smollm2-layers.yaml --jobs 2

  # done / running / preempted / failed / pending per cell:
  python sweep.py status configs/sweeps/smollm2-layers.yaml

  # the cells and the two commands each runs, without running anything:
  python sweep.py cells configs/sweeps/smollm2-layers.yaml

  # the report over the finished cells: OUTPUT_DIR/report/{report.md, cells.csv, settings.csv, change_heatmap.png}
  python sweep.py report configs/sweeps/smollm2-layers.yaml

  # on Slurm: the cells not done as one array job (submit_sweep.sh), 4 tasks at a time; the
  # arguments after -- go to sbatch (account, resources):
  python sweep.py submit configs/sweeps/smollm2-layers.yaml --throttle 4 -- -A project_xxx
  python sweep.py submit configs/sweeps/smollm2-layers.yaml --dry_run     # print the sbatch command only

  # one cell by its index in `cells` (what a Slurm array task runs):
  python sweep.py run-cell configs/sweeps/smollm2-layers.yaml --index 3

Rerunning `run` (or `submit`) skips finished cells, resumes preempted ones from their last complete checkpoint
and reruns failed ones; a failed cell leaves its log (CELL/cell.log) and never stops the others.
USR1 or TERM (Slurm's time-limit warning, scancel) makes the running training checkpoint and stop;
the cell is left preempted. Exit status: 0 when every cell is done, 1 when some are not (run-cell:
75 when its cell was preempted, as finetuning.py), 2 for a bad spec (one line on stderr).
"""

from __future__ import annotations

import sys

from soo.core.cli import CommandParser, non_negative_int, positive_int


def build_parser() -> CommandParser:
    """Every subcommand reads --config FILE.yaml (its flags, not the sweep's spec)."""
    parser = CommandParser(reads_config=False, prog="sweep.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_commands()
    run = commands.add_parser("run", help="run every cell that is not done, on this machine")
    run.add_argument("spec", help="the sweep's YAML file")
    run.add_argument("--jobs", type=positive_int, default=1, help="cells at a time (default 1)")
    status = commands.add_parser("status", help="the state of every cell")
    status.add_argument("spec", help="the sweep's YAML file")
    cells = commands.add_parser("cells", help="list the cells and their commands")
    cells.add_argument("spec", help="the sweep's YAML file")
    report = commands.add_parser("report", help="the report over the finished cells")
    report.add_argument("spec", help="the sweep's YAML file")
    submit = commands.add_parser(
        "submit",
        help="the cells not done as one Slurm array job (arguments after -- go to sbatch)",
        usage="sweep.py submit [-h] [--throttle K] [--dry_run] [--config FILE.yaml] spec [-- SBATCH_ARGS ...]",
        description="Submit the cells that are not done as one `sbatch --array=INDICES%K submit_sweep.sh SPEC` job, "
        "from the repository root. Arguments after -- go to sbatch, e.g. -- -A project_xxx "
        "--ntasks-per-node=4 --gres=gpu:v100:4 --time=3-00:00:00.",
    )
    submit.add_argument("spec", help="the sweep's YAML file")
    submit.add_argument(
        "--throttle",
        type=positive_int,
        default=4,
        help="array tasks (cells) running at a time, sbatch --array=...%%K (default 4)",
    )
    submit.add_argument("--dry_run", action="store_true", help="print the sbatch command, submit nothing")
    one = commands.add_parser("run-cell", help="run one cell by its index (a Slurm array task)")
    one.add_argument("spec", help="the sweep's YAML file")
    one.add_argument("--index", type=non_negative_int, required=True, help="the cell's index in `cells`")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `submit SPEC ... -- SBATCH_ARGS`: everything after the first -- is sbatch's.
    sbatch_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if sbatch_args and args.command != "submit":
        parser.error(f"arguments after -- are sbatch's, for `submit` only: {' '.join(sbatch_args)}")

    from soo.core.cli import fail
    from soo.sweep import SweepSpecError, load_sweep
    from soo.sweep.run import (
        PREEMPTED_EXIT_CODE,
        SKIPPED,
        cell_commands,
        cell_state,
        forward_stop_signals,
        run_cell,
        run_local,
        run_summary,
        status_table,
    )

    try:
        spec = load_sweep(args.spec)
    except SweepSpecError as error:
        return fail(error)
    cells = spec.cells()
    if args.command == "cells":
        for index, cell in enumerate(cells):
            print(f"[{index}] {cell.name}")
            for step, command in cell_commands(spec, cell).items():
                print(f"    {step}: {' '.join(command)}")
        return 0
    if args.command == "status":
        lines, counts = status_table(spec)
        print("\n".join(lines))
        print(f"{len(cells)} cells: " + ", ".join(f"{count} {state}" for state, count in counts.items() if count))
        return 0 if counts["done"] == len(cells) else 1
    if args.command == "report":
        from soo.sweep.report import write_sweep_report

        folder = write_sweep_report(spec)
        print(f"report: {folder / 'report.md'}")
        return 0
    if args.command == "submit":
        from soo.sweep.slurm import SubmitError, submit

        try:
            submit(spec, throttle=args.throttle, sbatch_args=sbatch_args, dry_run=args.dry_run)
        except SubmitError as error:
            return fail(error)
        return 0
    if args.command == "run-cell":
        if args.index >= len(cells):
            return fail(f"--index {args.index}: the sweep has {len(cells)} cells (0..{len(cells) - 1})")
        forward_stop_signals()
        state = run_cell(spec, cells[args.index])
        if state == SKIPPED:  # another runner holds the cell or finished it: success only if it is done
            state = cell_state(spec, cells[args.index])[0]
        return {"done": 0, "preempted": PREEMPTED_EXIT_CODE}.get(state, 1)
    forward_stop_signals()
    states = run_local(spec, jobs=args.jobs)
    print(run_summary(spec, states))
    return 0 if all(cell_state(spec, cell)[0] == "done" for cell in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
