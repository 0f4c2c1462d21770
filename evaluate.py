"""Deception evaluation: the base model and SOO adapters side by side, with controls and a report.

  # the README's main command trained outputs/smollm2-135m-instruct-soo; evaluate it against its base:
  python evaluate.py --adapters outputs/smollm2-135m-instruct-soo --output_dir results/smollm2

  # several seeds of one config (mean ± SD across seeds in the report), all layers' latent SOO:
  python evaluate.py --adapters outputs/run-seed0 outputs/run-seed1 outputs/run-seed2 --latent_all_layers

  # a quick look: two scenarios, 50 prompts per order
  python evaluate.py --adapters outputs/smollm2-135m-instruct-soo --scenarios main perspectives --n 50

  # the fast protocol alone: forced-choice p(deceptive) per prompt, no generation
  python evaluate.py --adapters outputs/smollm2-135m-instruct-soo --protocol forced_choice

The base model is read from the first adapter's soo_run_config.json unless --model_name_or_path is
given; with no adapter, only the base model is evaluated. Writes OUTPUT_DIR/report.md, results.json,
results.csv, forced_choice.jsonl and forced_choice.png (forced choice), responses.jsonl,
generations.jsonl (the cache: a re-run or a resumed run reuses it) and deception_rates.png
(generation), latent_soo_by_layer.png.

Bad input (an adapter folder that is missing or not an adapter, a missing or invalid --pairs_path,
a number below 1, an output folder that cannot be created) exits with status 2 and one line
`error: ...` on stderr, before any model is loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from soo.core.cli import CommandParser, config_from, fail


def build_parser() -> CommandParser:
    """evaluate.py's flags: one per EvalConfig field (soo/eval/config.py holds the defaults)."""
    from soo.eval.config import EvalConfig

    return CommandParser(EvalConfig, prog="evaluate.py", description=__doc__.split("\n\n")[0])


def check_inputs(args) -> Path | None:
    """Refuse bad input before any model is loaded; raises ValueError or OSError with the message.

    Creates the output folder; returns the topmost folder it created (None if it existed), so that
    a run that fails before writing anything can remove it again."""
    from soo.data.pair_io import read_pairs_jsonl

    for adapter in args.adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            missing = "does not exist" if not Path(adapter).exists() else "has no adapter_config.json"
            raise ValueError(
                f"adapter folder {adapter} {missing}: expected the output folder of finetuning.py "
                "(adapter_config.json inside)"
            )
    if args.pairs_path:
        read_pairs_jsonl(args.pairs_path)  # PairDataError (a ValueError) naming the file and line
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OSError(f"the output folder {out_dir} exists and is not a folder")
    created = next((folder for folder in reversed([out_dir, *out_dir.parents]) if not folder.exists()), None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(out_dir) else ""
        raise OSError(f"cannot create the output folder {out_dir}: {error.strerror or error}{where}") from None
    if not os.access(out_dir, os.W_OK):
        raise OSError(f"cannot write to the output folder {out_dir}: permission denied")
    return created


def remove_empty_folders(top: Path | None) -> None:
    """Remove `top` and the folders below it, if none holds a file."""
    if top is None:
        return
    for folder, _, _ in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
        try:
            os.rmdir(folder)
        except OSError:  # not empty: something was written, keep it
            return


def main(argv=None) -> int:
    from soo.core.modeling import ModelLoadError
    from soo.data.pair_io import PairDataError
    from soo.eval.config import EvalConfig
    from soo.eval.engine import AdapterMismatchError, run_evaluation
    from soo.eval.scenarios import build_eval_prompts

    args = build_parser().parse_args(argv)
    try:  # bad scenario names, adapters, pairs or output folder: one line, before any model is loaded
        build_eval_prompts(args.scenarios, n=args.n, seed=args.seed)
        created = check_inputs(args)
    except (ValueError, OSError) as error:
        return fail(error)
    config = config_from(EvalConfig, args)
    try:
        results = run_evaluation(config)
    except (AdapterMismatchError, ModelLoadError, PairDataError) as error:
        remove_empty_folders(created)  # e.g. the model could not be loaded: leave no empty output folder
        return fail(error)
    print(Path(config.out_dir, "report.md").read_text(encoding="utf-8"))
    print(f"Report written to {config.out_dir}/ ({len(results['rates'])} rate rows).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
