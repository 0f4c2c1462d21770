"""Generate self/other prompt pairs for SOO fine-tuning as a JSONL file.

Examples (from the repository root):

    python generate_data.py
        1000 training pairs, seed 0, both families -> data/soo_train.jsonl
    python generate_data.py --split test --n 300
        300 held-out pairs (test names and items, e.g. Bob and Oliver) -> data/soo_test.jsonl
    python generate_data.py --n 52 --seed 1 --families burglar --output_file data/burglar_52.jsonl
        burglar pairs only
    python generate_data.py --released --n 48 --output_file data/soo_train_released.jsonl
        the authors' released training set on the training vocabulary: one pair per item, the
        paper's three phrasings in turn, one other agent (configs/smollm2-135m-instruct-released.yaml)
    python generate_data.py --dataset_dir data/soo_pairs && python generate_data.py --split test --n 300 --dataset_dir data/soo_pairs
        a Hugging Face dataset folder: train.jsonl, test.jsonl and a README.md card, so that
        datasets.load_dataset("data/soo_pairs") gives both splits (finetuning.py --data_path
        data/soo_pairs reads its train split, --eval_data_path data/soo_pairs its test split);
        publish it with: hf upload USER/NAME data/soo_pairs --repo-type dataset

The same arguments always give a byte-identical file. The file is written atomically (an
interrupted run leaves any existing file as it was). Prints a table of pairs per family and
template, then the output path. Bad arguments, or an output file that cannot be written, exit with
status 2 and a line `error: ...` on stderr, and write nothing. The
generator itself is soo.data.pair_generation.generate_pairs; templates and vocabulary are in soo/data/templates.py.
"""

from __future__ import annotations

import sys

from soo.core.cli import CommandParser, fail, positive_int
from soo.core.io import write_jsonl_atomic
from soo.data.pair_generation import FAMILIES, generate_pairs, released_pairs, summarize
from soo.data.pair_io import write_dataset_card
from soo.data.templates import SPLITS

DEFAULT_OUT = {"train": "data/soo_train.jsonl", "test": "data/soo_test.jsonl"}


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="generate_data.py",
        description="Generate paired self/other prompts for SOO fine-tuning (JSONL).",
        epilog="See the module docstring of generate_data.py for examples.",
    )
    parser.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="number of pairs (default: 1000; with --released, every item of the split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="train",
        help="vocabulary pool: train, or test with the held-out names and items (default: train)",
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=FAMILIES,
        default=list(FAMILIES),
        metavar="FAMILY",
        help=f"prompt families, n is split evenly over them (choices: {', '.join(FAMILIES)}; default: all)",
    )
    parser.add_argument(
        "--released",
        action="store_true",
        help="the authors' released training set instead: one burglar pair per expensive item of the split "
        "(in order, the first n), cycling through the paper's three phrasings, one other agent "
        "(the split's first name), no context; --seed and --families do not apply",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--output_file",
        default=None,
        help="JSONL file to write; missing folders are created "
        "(default: data/soo_train.jsonl, or data/soo_test.jsonl for --split test)",
    )
    where.add_argument(
        "--dataset_dir",
        default=None,
        help="instead: write DIR/SPLIT.jsonl and a dataset card DIR/README.md naming every split file "
        "there, a folder datasets.load_dataset (and the hub) reads directly",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset_dir is not None:
        out = f"{args.dataset_dir}/{args.split}.jsonl"
    else:
        out = args.output_file if args.output_file is not None else DEFAULT_OUT[args.split]
    try:
        if args.released:
            records = released_pairs(args.split, args.n)
        else:
            records = generate_pairs(args.n or 1000, args.seed, split=args.split, families=args.families)
    except ValueError as error:  # e.g. n larger than the unique pairs available, repeated family
        parser.error(str(error))  # exits with status 2 before anything is written
    try:
        path = write_jsonl_atomic(out, records)
        if args.dataset_dir is not None:
            write_dataset_card(args.dataset_dir)
    except OSError as error:  # a folder that cannot be created, a directory in the way, no permission
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(out) else ""
        return fail(f"cannot write {out}: {error.strerror or error}{where}")
    print(summarize(records))
    print(
        f"wrote {len(records)} pairs to {path}"
        + (f" (dataset card {args.dataset_dir}/README.md)" if args.dataset_dir else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
