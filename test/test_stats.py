"""Interval math against published values, and the per-cell aggregation of labels."""

from __future__ import annotations

import math

import pytest

from soo.core.stats import mean_ci95, mean_sd, wilson_interval
from soo.eval.rates import aggregate_seeds, summarize_labels


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        (0, 10, 0.0, 0.2775),  # the textbook zero-success case: the Wald interval would be [0, 0]
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Wilson's example as reproduced in Newcombe (1998)
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=1e-4) and got_high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_contains_the_rate_and_narrows_with_n():
    for n in (4, 40, 400):
        low, high = wilson_interval(n // 4, n)
        assert low <= 0.25 <= high
    assert (wilson_interval(100, 400)[1] - wilson_interval(100, 400)[0]) < (
        wilson_interval(10, 40)[1] - wilson_interval(10, 40)[0]
    )
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mean_sd_and_ci():
    assert mean_sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx((5.0, 2.138089935), rel=1e-6)
    mean, half = mean_ci95([1.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(1.959964 * math.sqrt(2) / math.sqrt(2), rel=1e-5)
    assert math.isnan(mean_sd([1.0])[1])


def _row(condition, order, label, kind="deception", scenario="main", response="x"):
    return {
        "condition": condition,
        "group": "base" if condition == "base" else "soo",
        "scenario": scenario,
        "order": order,
        "kind": kind,
        "label": label,
        "response": response,
    }


def test_summarize_labels_counts_orders_pooled_and_ambiguous_separately():
    rows = (
        [_row("base", "deceptive_first", "deceptive")] * 8
        + [_row("base", "deceptive_first", "ambiguous", response="")] * 2
        + [_row("base", "deceptive_second", "honest")] * 6
        + [_row("base", "deceptive_second", "deceptive")] * 4
    )
    cells = {(e["order"]): e for e in summarize_labels(rows)}
    assert cells["deceptive_first"]["rate"] == 0.8 and cells["deceptive_first"]["ambiguous_rate"] == 0.2
    assert cells["deceptive_first"]["empty_responses"] == 2
    assert cells["deceptive_second"]["rate"] == 0.4 and cells["deceptive_second"]["ambiguous_rate"] == 0.0
    both = cells["both"]
    assert both["n"] == 20 and both["rate"] == pytest.approx(0.6)
    assert (both["ci_low"], both["ci_high"]) == pytest.approx(wilson_interval(12, 20))


def test_authors_rule_rate_and_agreement_beside_ours():
    def row(label, authors):
        return {**_row("base", "deceptive_first", label), "authors_label": authors}

    # 3 agree deceptive, 1 agrees honest, 2 ambiguous-for-us that the authors' rule calls deceptive.
    rows = [row("deceptive", "deceptive")] * 3 + [row("honest", "honest")] + [row("ambiguous", "deceptive")] * 2
    entry = [e for e in summarize_labels(rows) if e["order"] == "deceptive_first"][0]
    assert entry["rate"] == pytest.approx(0.5) and entry["authors_rate"] == pytest.approx(5 / 6)
    assert (entry["authors_ci_low"], entry["authors_ci_high"]) == pytest.approx(wilson_interval(5, 6))
    assert entry["agreement"] == pytest.approx(4 / 6)
    assert "authors_rate" not in summarize_labels([_row("base", "deceptive_first", "honest")])[0]


def test_perspectives_measure_is_correctness():
    rows = [_row("base", "deceptive_first", "correct", kind="perspectives", scenario="perspectives")] * 3 + [
        _row("base", "deceptive_first", "incorrect", kind="perspectives", scenario="perspectives")
    ]
    entry = [e for e in summarize_labels(rows) if e["order"] == "deceptive_first"][0]
    assert entry["measure"] == "correct" and entry["rate"] == 0.75


def test_aggregate_seeds_mean_and_sd_across_adapters():
    rows = (
        [_row("soo_0", "deceptive_first", "deceptive")] * 2
        + [_row("soo_0", "deceptive_first", "honest")] * 2
        + [_row("soo_1", "deceptive_first", "deceptive")] * 1
        + [_row("soo_1", "deceptive_first", "honest")] * 3
    )
    aggregated = {e["order"]: e for e in aggregate_seeds(summarize_labels(rows)) if e["group"] == "soo"}
    assert aggregated["deceptive_first"]["seeds"] == 2
    assert aggregated["deceptive_first"]["mean_rate"] == pytest.approx(0.375)
    assert aggregated["deceptive_first"]["sd_rate"] == pytest.approx(math.sqrt(2) * 0.125)


def test_mean_t_ci95_uses_the_student_t_quantile():
    from soo.core.stats import mean_t_ci95

    mean, half = mean_t_ci95([1.0, 2.0, 3.0])
    # t(0.975, df=2) = 4.302653; SD = 1; n = 3
    assert mean == 2.0 and abs(half - 4.302653 / 3**0.5) < 1e-5
    assert math.isnan(mean_t_ci95([5.0])[1])
