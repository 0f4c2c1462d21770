"""The evaluation report's PNG plots: deception rates, forced choice, latent SOO by layer.

Each takes the results dict that soo.eval.report writes as results.json; rates carry their
Wilson 95% intervals and ambiguous answers are drawn on their own, as in the tables.
"""

from __future__ import annotations

from pathlib import Path

from soo.core.plotting import pyplot


def scenarios_in_order(entries: list[dict]) -> list[str]:
    """Scenario names in the registry's display order (main first), unknown ones last."""
    from soo.eval.scenarios import SCENARIO_NAMES

    present = list(dict.fromkeys(entry["scenario"] for entry in entries))
    rank = {name: position for position, name in enumerate(SCENARIO_NAMES)}
    return sorted(present, key=lambda name: rank.get(name, len(rank)))


def plot_deception_rates(results: dict, path: Path) -> None:
    plt = pyplot()

    pooled = [e for e in results["rates"] if e["order"] == "both"]
    scenarios = scenarios_in_order(pooled)
    conditions = [condition["name"] for condition in results["conditions"]]
    width = 0.8 / len(conditions)
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(scenarios) + 2), 4.5))
    for offset, condition in enumerate(conditions):
        entries = {e["scenario"]: e for e in pooled if e["condition"] == condition}
        xs = [i + (offset - (len(conditions) - 1) / 2) * width for i in range(len(scenarios))]
        rates = [entries[s]["rate"] for s in scenarios]
        errors = [
            [entries[s]["rate"] - entries[s]["ci_low"] for s in scenarios],
            [entries[s]["ci_high"] - entries[s]["rate"] for s in scenarios],
        ]
        bars = axis.bar(xs, rates, width, yerr=errors, capsize=2, label=f"{condition}: measured rate")
        # Ambiguous answers stacked on top, so a low rate that only means "no answer" is visible.
        axis.bar(
            xs,
            [entries[s]["ambiguous_rate"] for s in scenarios],
            width,
            bottom=rates,
            alpha=0.25,
            hatch="//",
            color=bars.patches[0].get_facecolor(),
            label=f"{condition}: ambiguous",
        )
    axis.set_xticks(range(len(scenarios)), scenarios, rotation=40, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("deceptive rate (perspectives: correct rate)")
    axis.set_title("Both orders pooled; error bars: Wilson 95%; hatched: ambiguous answers")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_latent_soo(results: dict, path: Path) -> None:
    plt = pyplot()

    figure, (raw_axis, relative_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for condition, by_layer in results["latent_soo"].items():
        layers = sorted(by_layer, key=int)
        xs = [int(layer) for layer in layers]
        raw_axis.errorbar(
            xs,
            [by_layer[layer]["soo_loss"] for layer in layers],
            yerr=[by_layer[layer]["soo_loss_ci95"] for layer in layers],
            marker="o",
            capsize=2,
            label=condition,
        )
        relative_axis.plot(xs, [by_layer[layer]["soo_relative"] for layer in layers], marker="o", label=condition)
    trained = [layer for layer in results.get("trained_layers") or []]
    for axis in (raw_axis, relative_axis):
        for layer in trained:
            axis.axvline(layer, color="grey", linestyle=":", linewidth=1)
    # Raw SOO grows by orders of magnitude with depth: a log axis keeps early layers readable.
    raw_axis.set_yscale("log")
    raw_axis.set(
        xlabel="layer" + (" (dotted: trained layer)" if trained else ""),
        ylabel="SOO (MSE self vs other)",
        title="Latent SOO (mean ± 95% CI)",
    )
    relative_axis.set(xlabel="layer", ylabel="SOO / activation spread", title="Relative SOO")
    raw_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_forced_choice(results: dict, path: Path) -> None:
    """Order-averaged forced-choice score per scenario and condition (95% CI), with each
    condition's position bias as a marker: the two numbers a reader needs side by side."""
    plt = pyplot()

    summary = results["forced_choice"]["summary"]
    scenarios = scenarios_in_order(summary)
    conditions = [condition["name"] for condition in results["conditions"]]
    index = {(e["condition"], e["scenario"]): e for e in summary}
    width = 0.8 / len(conditions)
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(scenarios) + 2), 4.5))
    for offset, condition in enumerate(conditions):
        xs = [i + (offset - (len(conditions) - 1) / 2) * width for i in range(len(scenarios))]
        entries = [index[(condition, s)] for s in scenarios]
        bars = axis.bar(
            xs,
            [e["order_averaged"]["mean"] for e in entries],
            width,
            yerr=[e["order_averaged"]["ci95"] for e in entries],
            capsize=2,
            label=f"{condition}: order-averaged score",
        )
        axis.scatter(
            xs,
            [e["position_bias"]["mean"] for e in entries],
            marker="_",
            s=200,
            zorder=3,
            color="black" if offset == 0 else bars.patches[0].get_facecolor(),
            label=f"{condition}: p(first-listed)",
        )
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xticks(range(len(scenarios)), scenarios, rotation=40, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("p(deceptive) (perspectives: p(correct))")
    axis.set_title("Forced choice, order-averaged; error bars: 95% CI; dashes: position bias")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
