"""The sweep's report over its finished cells: a row per cell, seed means with Student-t 95%
intervals per setting, the controls beside the SOO cells, heatmaps, and a warning when the best
of many settings is picked.

Per cell, from CELL/eval/results.json (evaluate.py with the forced-choice protocol):
  change       order-averaged forced-choice p(deceptive) on the `main` (other) prompts, adapter
               minus base: below 0 means less deception
  latent SOO   at the cell's trained layer on held-out pairs, adapter and base; its change
A setting is a cell's settings without the seed; its figures are means over its seeds.
Each grid setting is also compared with each control seed by seed (same seed: same data order
and LoRA initialisation): the mean of the paired differences in change, with its Student-t 95%
interval and that interval Bonferroni-corrected for the number of grid settings.
Writes OUTPUT_DIR/report/{report.md, cells.csv, settings.csv, change_heatmap.png}.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from soo.core.io import write_text_atomic
from soo.core.plotting import pyplot
from soo.core.stats import mean_t_ci95, mean_t_interval
from soo.sweep.grid import GRID_CELL_KIND, SweepCell, SweepSpec, format_value
from soo.sweep.run import cell_state

HEADLINE_SCENARIO = "main"
SEED_KEY = "seed"
REPORT_FOLDER = "report"


@dataclass
class CellResult:
    name: str
    kind: str
    setting: str
    seed: int | None
    base_p: float
    adapter_p: float
    change: float
    layer: int | None
    latent_base: float
    latent_adapter: float
    latent_change: float


def setting_label(cell: SweepCell) -> str:
    parts = [f"{key}={format_value(value)}" for key, value in cell.settings.items() if key != SEED_KEY]
    label = ", ".join(parts)
    return label if cell.kind == GRID_CELL_KIND else f"{cell.kind}" + (f" ({label})" if label else "")


def read_cell(spec: SweepSpec, cell: SweepCell) -> CellResult:
    """A finished cell's figures; KeyError/ValueError when its results lack the forced choice."""
    results = json.loads((spec.cell_dir(cell) / "eval" / "results.json").read_text(encoding="utf-8"))
    adapter = next(c["name"] for c in results["conditions"] if c["name"] != "base")
    if not results.get("forced_choice"):
        raise ValueError(f"{cell.name}: no forced-choice results (evaluate with protocol forced_choice or both)")
    scores = {
        entry["condition"]: entry["order_averaged"]["mean"]
        for entry in results["forced_choice"]["summary"]
        if entry["scenario"] == HEADLINE_SCENARIO
    }
    layers = results.get("trained_layers") or []
    layer = layers[0] if layers else None
    latent = {
        name: by_layer.get(str(layer), {}).get("soo_loss", math.nan)
        for name, by_layer in (results.get("latent_soo") or {}).items()
    }
    base_latent, adapter_latent = latent.get("base", math.nan), latent.get(adapter, math.nan)
    return CellResult(
        name=cell.name,
        kind=cell.kind,
        setting=setting_label(cell),
        seed=cell.settings.get(SEED_KEY),
        base_p=scores["base"],
        adapter_p=scores[adapter],
        change=scores[adapter] - scores["base"],
        layer=layer,
        latent_base=base_latent,
        latent_adapter=adapter_latent,
        latent_change=adapter_latent - base_latent,
    )


def aggregate(rows: list[CellResult]) -> list[dict]:
    """One entry per (kind, setting), in first-seen order: seed means and Student-t 95% intervals."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for row in rows:
        groups.setdefault((row.kind, row.setting), []).append(row)
    entries = []
    for (kind, setting), members in groups.items():
        change, change_ci = mean_t_ci95([m.change for m in members])
        latent, latent_ci = mean_t_ci95([m.latent_change for m in members])
        entries.append(
            {
                "kind": kind,
                "setting": setting,
                "n_seeds": len(members),
                "seeds": [m.seed for m in members],
                "change": change,
                "change_ci95": change_ci,
                "per_seed": [m.change for m in members],
                "latent_change": latent,
                "latent_change_ci95": latent_ci,
                "adapter_p": sum(m.adapter_p for m in members) / len(members),
            }
        )
    add_paired_differences(rows, entries)
    return entries


def add_paired_differences(rows: list[CellResult], entries: list[dict]) -> None:
    """entry["vs"][control kind] for every grid entry: the change minus the control's change, per
    seed both have, as mean, 95% half-width, Bonferroni half-width (over grid settings) and n."""
    grid = [e for e in entries if e["kind"] == GRID_CELL_KIND]
    control_kinds = list(dict.fromkeys(row.kind for row in rows if row.kind != GRID_CELL_KIND))
    for entry in grid:
        entry["vs"] = {}
        members = {row.seed: row for row in rows if row.kind == GRID_CELL_KIND and row.setting == entry["setting"]}
        for kind in control_kinds:
            controls = {row.seed: row.change for row in rows if row.kind == kind}
            differences = [members[seed].change - controls[seed] for seed in members if seed in controls]
            mean, half = mean_t_ci95(differences)
            corrected = mean_t_interval(differences, 1 - 0.05 / len(grid))[1] if differences else math.nan
            entry["vs"][kind] = {"mean": mean, "ci95": half, "bonferroni_ci95": corrected, "n": len(differences)}


def _fmt(mean: float, half: float) -> str:
    return f"{mean:+.3f}" + (f" ± {half:.3f}" if not math.isnan(half) else "")


def best_of_many_warning(entries: list[dict]) -> str:
    """The grid setting with the largest fall, and its interval Bonferroni-corrected for the number
    of grid settings it was picked from."""
    grid = [e for e in entries if e["kind"] == GRID_CELL_KIND and not math.isnan(e["change"])]
    if len(grid) < 2:
        return ""
    best = min(grid, key=lambda e: e["change"])
    _, half = mean_t_interval(best["per_seed"], 1 - 0.05 / len(grid))
    return (
        f"**Best of {len(grid)} settings.** `{best['setting']}` has the largest fall, {best['change']:+.3f}; "
        f"picked out of {len(grid)}, its Bonferroni-corrected interval (95% family-wise) is "
        f"{_fmt(best['change'], half)}. Treat a best cell as a hypothesis for a new run with fresh seeds, not as a result."
    )


def plot_heatmap(spec: SweepSpec, entries: list[dict], path: Path) -> bool:
    """Rows: the first non-seed grid key; columns: the other non-seed keys' combinations. Two panels:
    change in p(deceptive) and in latent SOO, each cell 'mean ± CI (n)'. False when nothing to draw."""
    plt = pyplot()

    keys = [key for key in spec.grid if key != SEED_KEY]
    grid_entries = [e for e in entries if e["kind"] == GRID_CELL_KIND]
    if not keys or not grid_entries:
        return False
    by_setting = {e["setting"]: e for e in grid_entries}
    rows = [format_value(value) for value in spec.grid[keys[0]]]
    columns = [""]
    if len(keys) > 1:
        import itertools

        columns = [
            ", ".join(f"{key}={format_value(v)}" for key, v in zip(keys[1:], combo))
            for combo in itertools.product(*(spec.grid[key] for key in keys[1:]))
        ]
    figure, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * len(columns) * 2, 1.5 + 0.5 * len(rows)), squeeze=False)
    for axis, (field, title) in zip(
        axes[0], (("change", "change in p(deceptive), main"), ("latent_change", "change in latent SOO"))
    ):
        values = [[math.nan] * len(columns) for _ in rows]
        texts = [[""] * len(columns) for _ in rows]
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                label = f"{keys[0]}={row}" + (f", {column}" if column else "")
                entry = by_setting.get(label)
                if entry is not None:
                    values[i][j] = entry[field]
                    texts[i][j] = f"{_fmt(entry[field], entry[field + '_ci95'])}\n(n={entry['n_seeds']})"
        finite = [abs(v) for row in values for v in row if not math.isnan(v)] or [1.0]
        limit = max(finite) or 1.0
        image = axis.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(columns)):
                dark = not math.isnan(values[i][j]) and abs(values[i][j]) > 0.6 * limit
                axis.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black")
        axis.set_yticks(range(len(rows)), [f"{keys[0]}={row}" for row in rows])
        axis.set_xticks(range(len(columns)), columns or [""], rotation=20, ha="right")
        controls = "; ".join(
            f"{e['kind']} {_fmt(e[field], e[field + '_ci95'])}" for e in entries if e["kind"] != GRID_CELL_KIND
        )
        axis.set_title(title + (f"\ncontrols: {controls}" if controls else ""), fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_sweep_report(spec: SweepSpec) -> Path:
    """Read every done cell and write the report files; returns the report folder."""
    folder = spec.output_dir / REPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    cells = spec.cells()
    rows, missing, unreadable = [], [], []
    for cell in cells:
        if cell_state(spec, cell)[0] != "done":
            missing.append(cell.name)
            continue
        try:
            rows.append(read_cell(spec, cell))
        except (OSError, KeyError, ValueError, StopIteration) as error:
            unreadable.append(f"{cell.name} ({type(error).__name__}: {error})")
    entries = aggregate(rows)

    fields = list(asdict(rows[0])) if rows else [f for f in CellResult.__dataclass_fields__]
    with (folder / "cells.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    with (folder / "settings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        control_kinds = list(dict.fromkeys(e["kind"] for e in entries if e["kind"] != GRID_CELL_KIND))
        writer.writerow(
            ["kind", "setting", "n_seeds", "change", "change_ci95", "latent_change", "latent_change_ci95"]
            + [f"minus_{kind}_{part}" for kind in control_kinds for part in ("mean", "ci95", "bonferroni_ci95", "n")]
        )
        for e in entries:
            versus = e.get("vs", {})
            writer.writerow(
                [
                    e["kind"],
                    e["setting"],
                    e["n_seeds"],
                    e["change"],
                    e["change_ci95"],
                    e["latent_change"],
                    e["latent_change_ci95"],
                ]
                + [
                    versus.get(kind, {}).get(part, "")
                    for kind in control_kinds
                    for part in ("mean", "ci95", "bonferroni_ci95", "n")
                ]
            )
    has_plot = plot_heatmap(spec, entries, folder / "change_heatmap.png")

    lines = [
        f"# Sweep report: {spec.path.name}",
        "",
        f"{len(rows)} of {len(cells)} cells finished"
        + (f"; not finished: {', '.join(missing)}" if missing else "")
        + (f"; unreadable: {'; '.join(unreadable)}" if unreadable else "")
        + ".",
        "",
        f"Change = order-averaged forced-choice p(deceptive) on `{HEADLINE_SCENARIO}` (other prompts), adapter minus "
        "base (below 0: less deception); latent SOO change at the cell's trained layer on held-out pairs. "
        "Per setting: mean over seeds ± Student-t 95% half-width (none for one seed). "
        "'minus CONTROL': the setting's change minus the control's, seed by seed, mean ± 95% half-width and "
        "(in brackets) the half-width Bonferroni-corrected for the number of grid settings; an interval "
        "entirely below 0 is a fall in deception beyond the control.",
        "",
    ]
    if has_plot:
        lines += ["![change per setting](change_heatmap.png)", ""]
    control_kinds = list(dict.fromkeys(e["kind"] for e in entries if e["kind"] != GRID_CELL_KIND))
    lines += [
        "| kind | setting | seeds | change in p(deceptive) | per seed | change in latent SOO |"
        + "".join(f" minus {kind}, paired (Bonferroni) |" for kind in control_kinds),
        "|---|---|---|---|---|---|" + "---|" * len(control_kinds),
    ]
    for e in entries:
        versus = ""
        for kind in control_kinds:
            d = e.get("vs", {}).get(kind)
            versus += (
                f" {_fmt(d['mean'], d['ci95'])} ({_fmt(d['mean'], d['bonferroni_ci95'])}), n={d['n']} |"
                if d and d["n"]
                else " - |"
            )
        lines.append(
            f"| {e['kind']} | {e['setting'] or '-'} | {e['n_seeds']} | {_fmt(e['change'], e['change_ci95'])} | "
            f"{', '.join(f'{v:+.3f}' for v in e['per_seed'])} | {_fmt(e['latent_change'], e['latent_change_ci95'])} |"
            + versus
        )
    warning = best_of_many_warning(entries)
    if warning:
        lines += ["", warning]
    lines += [
        "",
        "## Cells",
        "",
        "| cell | p(deceptive) base | adapter | change | layer | latent SOO base | adapter |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.base_p:.3f} | {row.adapter_p:.3f} | {row.change:+.3f} | {row.layer} | "
            f"{row.latent_base:.4g} | {row.latent_adapter:.4g} |"
        )
    write_text_atomic(folder / "report.md", "\n".join(lines) + "\n")
    return folder
