"""The SOO classifier's statistics: how often the deceptive policy shows the larger SOO value.

The rule (deceptive = the policy with the larger mean SOO value, a distance, i.e. less self-other
overlap) is fixed in advance, not fitted; these functions measure its accuracy over policy pairs,
on pools of per-episode SOO values (one pool per policy, NaN episodes left out).
"""

from __future__ import annotations

import numpy as np

from soo.rl.config import BASELINES


def classification_accuracy(
    deceptive_soo: list[np.ndarray],
    honest_soo: list[np.ndarray],
    episode_counts: list[int],
    draws: int = 500,
    seed: int = 0,
) -> dict:
    """How often the deceptive policy shows the lower self-other overlap (the larger mean SOO
    value, a distance) when each policy is judged on n evaluation episodes.

    Every (deceptive policy, honest policy) pair across training seeds is compared; for each n,
    `draws` random subsets of n episodes are drawn without replacement from each policy's pool
    (draw k of a policy is compared with draw k of every policy it is paired with; within a draw
    the subsets for growing n are nested: the first n episodes of one shuffle of the pool). Only
    n up to half of both pools is used for a pair. Returns, per n, the mean accuracy over pairs, its
    min/max over pairs, and the worst pair (indices into the two lists). The rule (deceptive =
    larger SOO distance) is fixed in advance, not fitted."""
    rng = np.random.default_rng(seed)
    deceptive_soo = [np.asarray(p, dtype=float) for p in deceptive_soo]
    honest_soo = [np.asarray(p, dtype=float) for p in honest_soo]
    out = {
        "episodes": [],
        "accuracy": [],
        "pair_min": [],
        "pair_max": [],
        "worst_pair": [],
        "pairs": len(deceptive_soo) * len(honest_soo),
        "draws": draws,
    }

    def prefix_means(pool: np.ndarray) -> np.ndarray:
        """draws x len(pool): entry [k, n - 1] = mean of the first n episodes of shuffle k."""
        shuffled = pool[np.argsort(rng.random((draws, len(pool))), axis=1)]
        return np.cumsum(shuffled, axis=1) / np.arange(1, len(pool) + 1)

    def subset_means(prefix: np.ndarray, n: int) -> np.ndarray:
        if 2 * n > prefix.shape[1]:  # subsets of more than half the pool are nearly the same subset each draw
            return np.full(draws, np.nan)
        return prefix[:, n - 1]

    dec_prefix = [prefix_means(p) for p in deceptive_soo]
    hon_prefix = [prefix_means(p) for p in honest_soo]
    for n in episode_counts:
        dec = np.stack([subset_means(p, n) for p in dec_prefix])  # policies x draws
        hon = np.stack([subset_means(p, n) for p in hon_prefix])
        usable = ~np.isnan(dec[:, :1]) & ~np.isnan(hon[:, 0])[None, :]  # deceptive x honest
        if not usable.any():
            continue
        per_pair = np.stack([(row[None, :] > hon).mean(axis=1) for row in dec])  # chunked by deceptive policy
        values = per_pair[usable]
        worst = np.unravel_index(np.argmin(np.where(usable, per_pair, np.inf)), per_pair.shape)
        out["episodes"].append(n)
        out["accuracy"].append(float(values.mean()))
        out["pair_min"].append(float(values.min()))
        out["pair_max"].append(float(values.max()))
        out["worst_pair"].append([int(worst[0]), int(worst[1])])
    return out


def one_episode_separation(deceptive_soo: list[np.ndarray], honest_soo: list[np.ndarray]) -> dict:
    """The classifier on single episodes, exactly: for every (deceptive, honest) pair of policies,
    the share of all (deceptive episode, honest episode) combinations in which the deceptive one
    has the larger SOO value (ties count half), i.e. the n = 1 column without sampling. When every
    pair is at 100% accuracy cannot rank pairs, so each pair also gets a margin: its deceptive
    policy's smallest episode value over its honest policy's largest (above 1, any single episode
    tells the pair apart). The worst pair is the least accurate, then the smallest margin;
    `margin` is the smallest over all pairs."""
    shape = (len(deceptive_soo), len(honest_soo))
    accuracy, margin = np.full(shape, np.nan), np.full(shape, np.nan)
    for j, honest in enumerate(honest_soo):
        ranked = np.sort(np.asarray(honest, dtype=float))
        for i, deceptive in enumerate(deceptive_soo):
            deceptive = np.asarray(deceptive, dtype=float)
            if ranked.size and deceptive.size:
                below = np.searchsorted(ranked, deceptive, side="left")
                ties = np.searchsorted(ranked, deceptive, side="right") - below
                accuracy[i, j] = (below + 0.5 * ties).sum() / (deceptive.size * ranked.size)
                margin[i, j] = deceptive.min() / ranked[-1]
    usable = np.flatnonzero(np.isfinite(accuracy))
    if not usable.size:  # every pool empty (e.g. `authors` with red in view throughout a tiny run)
        return {
            "accuracy": float("nan"),
            "pair_min": float("nan"),
            "worst_pair": [0, 0],
            "worst_pair_margin": float("nan"),
            "margin": float("nan"),
        }
    worst = usable[np.lexsort((margin.flat[usable], accuracy.flat[usable]))[0]]
    i, j = np.unravel_index(worst, shape)
    return {
        "accuracy": float(np.nanmean(accuracy)),
        "pair_min": float(accuracy[i, j]),
        "worst_pair": [int(i), int(j)],
        "worst_pair_margin": float(margin[i, j]),
        "margin": float(np.nanmin(margin)),
    }


def finite_values(values: list[float]) -> np.ndarray:
    """The values that exist: an episode without a (self, other) pair has a NaN SOO value."""
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def baseline_pools(seeds: list[dict], variant: str) -> dict[str, list[np.ndarray]]:
    """{baseline: per seed, its episodes' finite SOO values} from `run --classifier_only` data."""
    return {b: [finite_values(r["variants"][variant][b]["soo"]) for r in seeds] for b in BASELINES}
