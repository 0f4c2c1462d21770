"""Deception evaluation: the base model and SOO adapters side by side, with controls and a report.

  # the README's main command trained outputs/smollm2-135m-instruct-soo; evaluate it against its base:
  python evaluate.py --adapters outputs/smollm2-135m-instruct-soo --out_dir results/smollm2

  # several seeds of one config (mean ± SD across seeds in the report), all layers' latent SOO:
  python evaluate.py --adapters outputs/run-seed0 outputs/run-seed1 outputs/run-seed2 --latent_all_layers

  # a quick look: two scenarios, 50 prompts per order
  python evaluate.py --adapters outputs/smollm2-135m-instruct-soo --scenarios main perspectives --n 50

The base model is read from the first adapter's soo_run_config.json unless --model_name_or_path is
given; with no adapter, only the base model is evaluated. Writes OUT_DIR/report.md, results.json,
results.csv, responses.jsonl, generations.jsonl (the cache: a re-run or a resumed run reuses it),
deception_rates.png and latent_soo_by_layer.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from soo.eval.scenarios import SCENARIO_NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--adapters", nargs="*", default=[], help="LoRA adapter directories from finetuning.py")
    parser.add_argument("--model_name_or_path", default=None,
                        help="base model (default: the one the first adapter was trained on; else the embedded default)")
    parser.add_argument("--scenarios", nargs="+", default=None, metavar="NAME",
                        help=f"scenarios to run (default: all): {', '.join(SCENARIO_NAMES)}")
    parser.add_argument("--n", type=int, default=250, help="prompts per scenario and room order")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling items and rooms")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=16, help="prompts per generation batch")
    parser.add_argument("--answer_suffix", default=None,
                        help="appended to every scenario (default: the adapter's config, else the room-name one)")
    parser.add_argument("--pairs_path", default=None,
                        help="held-out pairs for latent SOO (default: 200 generated test-split pairs)")
    parser.add_argument("--n_pairs", type=int, default=200)
    parser.add_argument("--latent_all_layers", action="store_true", help="latent SOO at every layer (a curve)")
    parser.add_argument("--no_capability", dest="capability", action="store_false",
                        help="skip KL to base and perplexity")
    parser.add_argument("--mt_bench_export", action="store_true",
                        help="also export answers to MT-Bench-style questions for an external judge")
    parser.add_argument("--out_dir", default="results/eval")
    parser.add_argument("--allow_base_mismatch", action="store_true")
    return parser


def main(argv=None) -> int:
    from soo.eval.scenarios import build_eval_prompts
    from soo.eval.engine import AdapterMismatchError, EvalConfig, run_evaluation
    from soo.core.modeling import ModelLoadError
    from soo.data.pairs import PairDataError

    args = build_parser().parse_args(argv)
    try:  # bad scenario names or n: one line naming the valid choices, before any model is loaded
        build_eval_prompts(args.scenarios, n=args.n, seed=args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = EvalConfig(**vars(args))
    try:
        results = run_evaluation(config)
    except (AdapterMismatchError, ModelLoadError, PairDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(Path(config.out_dir, "report.md").read_text(encoding="utf-8"))
    print(f"Report written to {config.out_dir}/ ({len(results['rates'])} rate rows).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
