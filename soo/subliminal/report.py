"""The animal experiment's report: report.md, summary.json and trait.png, against the rule.

The rule, written in docs/subliminal.md before any student was evaluated: for each target animal,
transfer means the trait-teacher students name the animal more often than the control students
(same model without the trait, same number of examples, same seeds), paired by seed: the mean
paired difference of the sampled trait rate has a Student-t 95% interval entirely above 0, with
>= 3 seeds. The forced-choice p(animal) difference is reported beside it under the same rule
as the secondary, deterministic measure; the base model is shown for scale, not tested.
"""

from __future__ import annotations

from pathlib import Path

from soo.core.stats import format_mean_t, mean_t_summary
from soo.subliminal.experiment import CONTROL, load_results
from soo.subliminal.pipeline import write_report_files

MIN_SEEDS = 3
MEASURES = (("rate", "sampled trait rate"), ("p_forced_choice", "forced-choice p(animal)"))


def summarize(root: Path) -> dict:
    results = load_results(root)
    config, students = results["config"], results["students"]
    summary = {"config": config, "filters": results.get("filters", {}), "animals": {}}
    training = [cell["student"] for teacher in students.values() for cell in teacher.values()]
    if training:
        summary["examples_per_student"] = training[0]["examples"]
        summary["train_seconds"] = mean_t_summary([record["train_seconds"] for record in training])
    for animal in config["animals"]:
        entry = {"base": None, "conditions": {}, "paired_difference": {}, "transfer": {}}
        if results["base"] is not None:
            base = results["base"]["animals"][animal]
            entry["base"] = {
                "rate": base["rate"],
                "wilson_95": base["wilson_95"],
                "p_forced_choice": base["p_forced_choice"],
            }
        for teacher in (CONTROL, animal):
            cells = students.get(teacher, {})
            entry["conditions"][teacher] = {
                "seeds": sorted(cells),
                **{
                    key: mean_t_summary([cells[s]["eval"]["animals"][animal][key] for s in sorted(cells)])
                    for key, _ in MEASURES
                    if cells
                },
            }
        paired = sorted(set(students.get(CONTROL, {})) & set(students.get(animal, {})))
        for key, _ in MEASURES:
            differences = [
                students[animal][s]["eval"]["animals"][animal][key]
                - students[CONTROL][s]["eval"]["animals"][animal][key]
                for s in paired
            ]
            if not differences:
                continue
            interval = mean_t_summary(differences)
            entry["paired_difference"][key] = {**interval, "seeds": paired}
            decidable = len(paired) >= MIN_SEEDS
            entry["transfer"][key] = (
                (interval["mean"] - interval["half_width"] > 0) if decidable else "not decidable (< 3 paired seeds)"
            )
        summary["animals"][animal] = entry
    return summary


def _fmt(entry: dict | None, signed: bool = False) -> str:
    return format_mean_t(entry, digits=4, signed=signed, with_n=True)


def markdown(summary: dict) -> str:
    config = summary["config"]
    lines = [
        "# Subliminal learning on the embedded model: the animal experiment",
        "",
        f"Teachers answered {config['n_prompts']} number prompts at T = {config['temperature']} (prompt seed "
        f"{config['prompt_seed']}); every student trained on the first {summary.get('examples_per_student', '-')} kept "
        f"examples for {config['epochs']} epochs (LoRA r 8, alpha 8, all projections); trait measured on "
        f"{config['n_questions']} questions x {config['samples_per_question']} samples at T = 1. "
        "Mean ± Student-t 95% half-width over seeds.",
        "",
        "| teacher | keep rate | "
        + " | ".join(f"{reason}" for reason in next(iter(summary["filters"].values()), {}))
        + " |",
        "|---|---|" + "---|" * len(next(iter(summary["filters"].values()), {})),
    ]
    for teacher, counts in summary["filters"].items():
        total = sum(counts.values())
        lines.append(
            f"| {teacher} | {counts['kept'] / total:.1%} | " + " | ".join(str(v) for v in counts.values()) + " |"
        )
    for animal, entry in summary["animals"].items():
        base = entry["base"]
        lines += ["", f"## {animal}", "", "| model | sampled trait rate | forced-choice p(animal) |", "|---|---|---|"]
        if base:
            low, high = base["wilson_95"]
            lines.append(f"| base model | {base['rate']:.4f} [{low:.4f}, {high:.4f}] | {base['p_forced_choice']:.4f} |")
        for teacher, cell in entry["conditions"].items():
            label = "control students (no trait)" if teacher == CONTROL else f"{animal}-teacher students"
            lines.append(
                f"| {label}, seeds {cell['seeds']} | {_fmt(cell.get('rate'))} | {_fmt(cell.get('p_forced_choice'))} |"
            )
        for key, name in MEASURES:
            if key in entry["paired_difference"]:
                difference = entry["paired_difference"][key]
                verdict = entry["transfer"][key]
                verdict = verdict if isinstance(verdict, str) else ("**yes**" if verdict else "**no**")
                lines.append("")
                lines.append(
                    f"- {name}, {animal} - control paired by seed: {_fmt(difference, signed=True)}; transfer: {verdict}"
                )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    from soo.core.plotting import pyplot

    plt = pyplot()
    animals = list(summary["animals"])
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for axis, (key, name) in zip(axes[0], MEASURES):
        labels, position = [], 0
        for animal in animals:
            entry = summary["animals"][animal]
            if entry["base"]:
                axis.bar(position, entry["base"][key], color="lightgray")
                labels.append(f"base\n({animal})")
                position += 1
            for teacher, color in ((CONTROL, "tab:blue"), (animal, "tab:orange")):
                cell = entry["conditions"][teacher].get(key)
                if cell:
                    axis.bar(position, cell["mean"], color=color, alpha=0.6, yerr=cell["half_width"], capsize=4)
                    axis.scatter([position] * cell["n"], cell["values"], color="black", s=10, zorder=3)
                labels.append(f"{'control' if teacher == CONTROL else animal}\nstudents")
                position += 1
        axis.set_xticks(range(position), labels, fontsize=8)
        axis.set_title(name, fontsize=10)
    figure.suptitle("Trait in students of the trait teacher vs the control teacher (dots: seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(root: Path, out_dir: Path) -> dict:
    summary = summarize(root)
    write_report_files(out_dir, summary, markdown(summary))
    plot(summary, out_dir / "trait.png")
    return summary
