"""The RL report's PNG plots: learning curves, classifier accuracy, per-episode SOO values, behaviour."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from soo.core.plotting import pyplot
from soo.rl.classifier import baseline_pools
from soo.rl.config import CONDITIONS


def _read_curve(path: Path) -> dict[str, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {
        key: np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])
        for key in ("blue_return", "red_trapped")
    }


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_learning_curves(out_dir: Path, summary: dict, results: list[dict], path: Path) -> None:
    plt = pyplot()

    variants = list(summary["variants"])
    fig, axes = plt.subplots(2, len(variants), figsize=(6 * len(variants), 7), squeeze=False)
    for col, variant in enumerate(variants):
        for condition in CONDITIONS:
            curves = [
                _read_curve(
                    out_dir / f"seed_{r['seed']}" / r["variants"][variant]["stage_folders"][condition] / "curve.csv"
                )
                for r in results
                if condition in r["variants"].get(variant, {}).get("stage_folders", {})
            ]
            if not curves:
                continue
            for row, key in enumerate(("blue_return", "red_trapped")):
                length = min(len(c[key]) for c in curves)
                window = max(1, length // 50)
                stacked = np.stack([_smooth(c[key][:length], window) for c in curves])
                x = np.arange(stacked.shape[1]) + window
                axes[row][col].plot(x, stacked.mean(0), label=f"{condition} (n={len(curves)})")
                if len(curves) > 1:
                    axes[row][col].fill_between(x, stacked.min(0), stacked.max(0), alpha=0.2)
        axes[0][col].set_title(f"{variant}: blue return per episode (training, exploring)")
        axes[1][col].set_title(f"{variant}: red trapped at non-goal landmark")
        for row in range(2):
            axes[row][col].set_xlabel("episode of its own stage (fine-tuning starts from the deceptive baseline)")
            axes[row][col].legend(fontsize=7)
    fig.suptitle("Moving averages; band = min..max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_classifier(summary: dict, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, block in summary["variants"].items():
        clf = block["classifier"]
        acc = 100 * np.array(clf["accuracy"])
        line = ax.plot(clf["episodes"], acc, marker="o", label=f"{variant} ({clf['pairs']} pairs)")
        ax.fill_between(
            clf["episodes"],
            100 * np.array(clf["pair_min"]),
            100 * np.array(clf["pair_max"]),
            alpha=0.15,
            color=line[0].get_color(),
        )
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_ylim(0, 102)
    ax.set_xlabel("evaluation episodes per policy")
    ax.set_ylabel("deceptive policy has the larger SOO value (%)")
    ax.set_title("SOO classifier accuracy (band: worst..best pair)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_soo_values(seeds: list[dict], path: Path) -> None:
    """Per-episode SOO values of every honest and every deceptive baseline (all seeds pooled, log
    scale), one panel per variant: how far apart the classifier's two classes are, which the
    accuracy curve cannot show once it sits at 100%."""
    plt = pyplot()

    variants = list(seeds[0]["variants"])
    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        pools = {b: np.concatenate(per_seed) for b, per_seed in baseline_pools(seeds, variant).items()}
        positive = np.concatenate([values[values > 0] for values in pools.values()])
        bins = np.geomspace(positive.min(), positive.max() * 1.01, 60) if positive.size else np.geomspace(1e-6, 1.0, 60)
        for baseline, values in pools.items():
            ax.hist(np.clip(values, bins[0], None), bins=bins, alpha=0.6, label=f"{baseline} ({values.size} episodes)")
        ax.set_xscale("log")
        ax.set_xlabel("SOO value of one episode (mean MSE, log scale)")
        ax.set_ylabel("episodes")
        ax.set_title(f"{variant}: {len(seeds)} seeds per baseline")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_behaviour(summary: dict, path: Path) -> None:
    plt = pyplot()

    keys = [
        ("red_trapped", "red at non-goal %"),
        ("agreement_honest", "= honest %"),
        ("agreement_deceptive", "= deceptive %"),
    ]
    variants = list(summary["variants"])
    fig, axes = plt.subplots(1, len(variants), figsize=(7 * len(variants), 4), squeeze=False)
    width = 0.8 / len(keys)
    for col, variant in enumerate(variants):
        conditions = summary["variants"][variant]["conditions"]
        x = np.arange(len(conditions))
        for k, (key, label) in enumerate(keys):
            means = [100 * conditions[c][key]["mean"] for c in conditions]
            errs = [100 * np.nan_to_num(conditions[c][key]["ci95"]) for c in conditions]
            axes[0][col].bar(x + k * width, means, width, yerr=errs, capsize=3, label=label)
        axes[0][col].set_xticks(x + width, list(conditions))
        axes[0][col].set_ylim(0, 125)  # room above 100 for the legend and t-intervals
        axes[0][col].set_title(f"{variant} (n seeds = {len(summary['variants'][variant]['seeds'])}, 95% CI)")
        axes[0][col].legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
