"""Capability retention with lm-evaluation-harness: a base model and base + SOO adapter on the same
tasks, the difference per task with a paired standard error (an optional extra:
requirements-eval.txt).

  # the bundled offline task (soo/eval/resources/lm_eval/soo_capability.yaml), the demo adapter:
  python -m soo.tools.lm_eval_compare outputs/smollm2-135m-instruct-soo
  # standard tasks (pre-downloaded on a login node, see docs/guides/cluster.md#capability-tasks), 200 items each:
  python -m soo.tools.lm_eval_compare ADAPTER --tasks arc_easy hellaswag mmlu_high_school_biology --limit 200

Both models answer the same items (lm-eval's log-likelihood of each choice), so the change in
accuracy is measured item by item: delta = mean(adapter - base) over the items, its standard error
sd(differences) / sqrt(n) (paired: much smaller than the two unpaired standard errors combined,
which are printed beside it). Writes OUTPUT_FILE (.json) and prints a markdown table. Bad input
(no adapter, an unknown task) is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from soo.core.cli import CommandParser

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_TASKS = REPO_ROOT / "soo" / "eval" / "resources" / "lm_eval"  # their data paths are relative to REPO_ROOT
METRICS = ("acc", "acc_norm")


def paired_delta(base: list[float], tuned: list[float]) -> dict:
    """Mean of tuned - base over paired items and its standard error (sample SD / sqrt n)."""
    differences = [t - b for b, t in zip(base, tuned)]
    n = len(differences)
    mean = sum(differences) / n if n else math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1)) if n > 1 else math.nan
    return {"delta": mean, "se": sd / math.sqrt(n) if n > 1 else math.nan, "n": n}


def per_item(samples: list[dict], metric: str) -> dict[int, float]:
    return {sample["doc_id"]: float(sample[metric]) for sample in samples if metric in sample}


def compare(base_result: dict, tuned_result: dict) -> list[dict]:
    """One row per task and metric: base and tuned accuracy with lm-eval's standard errors, and the
    paired delta over the items both answered."""
    rows = []
    for task, base_scores in base_result["results"].items():
        tuned_scores = tuned_result["results"].get(task, {})
        for metric in METRICS:
            key = f"{metric},none"
            if key not in base_scores or key not in tuned_scores:
                continue
            base_items = per_item(base_result["samples"].get(task, []), metric)
            tuned_items = per_item(tuned_result["samples"].get(task, []), metric)
            common = sorted(set(base_items) & set(tuned_items))
            delta = paired_delta([base_items[i] for i in common], [tuned_items[i] for i in common])
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "base": base_scores[key],
                    "base_se": base_scores.get(f"{metric}_stderr,none"),
                    "tuned": tuned_scores[key],
                    "tuned_se": tuned_scores.get(f"{metric}_stderr,none"),
                    **delta,
                }
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    def num(value) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    lines = [
        "| task | metric | n | base (± SE) | base + adapter (± SE) | delta, paired (± SE) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['metric']} | {row['n']} | {num(row['base'])} ± {num(row['base_se'])} | "
            f"{num(row['tuned'])} ± {num(row['tuned_se'])} | {row['delta']:+.3f} ± {num(row['se'])} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from soo.core.cli import positive_int

    parser = CommandParser(
        prog="python -m soo.tools.lm_eval_compare", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("adapter", help="an adapter folder from finetuning.py")
    parser.add_argument(
        "--model_name_or_path", default=None, help="the base model (default: the one the adapter was trained on)"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["soo_capability"],
        help="lm-eval task names (default: the bundled soo_capability)",
    )
    parser.add_argument("--limit", type=positive_int, default=None, help="items per task at most (default: all)")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="lm-eval batch size (default 8)")
    parser.add_argument("--num_fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    parser.add_argument(
        "--output_file",
        default=None,
        help="JSON with both runs' scores and the deltas (default: ADAPTER/lm_eval_compare.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from soo.core.cli import fail
    from soo.core.io import read_run_config, write_json_atomic

    adapter = Path(args.adapter).resolve()
    if not (adapter / "adapter_config.json").is_file():
        return fail(f"{adapter} holds no adapter_config.json: pass an adapter folder from finetuning.py")
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        return fail("lm-evaluation-harness is not installed: pip install -r requirements-eval.txt")
    import torch

    from soo.core.modeling import resolve_model_path

    base = resolve_model_path(args.model_name_or_path or read_run_config(adapter).get("model_path") or "embedded")
    task_manager = TaskManager(include_path=str(BUNDLED_TASKS))
    unknown = [task for task in args.tasks if task not in task_manager.all_tasks]
    if unknown:
        return fail(f"unknown lm-eval task(s) {', '.join(unknown)} (offline: only tasks whose data is cached)")
    model_args = {"pretrained": str(base), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    output = Path(args.output_file).resolve() if args.output_file else adapter / "lm_eval_compare.json"
    runs = {}
    for name, extra in (("base", {}), ("adapter", {"peft": str(adapter)})):
        print(f"lm-eval: {name} on {', '.join(args.tasks)}", file=sys.stderr)
        with contextlib.chdir(REPO_ROOT):  # the bundled task's data path is relative to the repository
            runs[name] = simple_evaluate(
                model="hf",
                model_args={**model_args, **extra},
                tasks=list(args.tasks),
                task_manager=task_manager,
                batch_size=args.batch_size,
                limit=args.limit,
                num_fewshot=args.num_fewshot,
                log_samples=True,
            )
    rows = compare(runs["base"], runs["adapter"])
    write_json_atomic(
        output,
        {
            "base_model": str(base),
            "adapter": str(adapter),
            "tasks": args.tasks,
            "limit": args.limit,
            "rows": rows,
            "base_results": runs["base"]["results"],
            "adapter_results": runs["adapter"]["results"],
        },
    )
    print(markdown_table(rows))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
