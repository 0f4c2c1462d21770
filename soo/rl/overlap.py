"""Self-other overlap (SOO) on blue's policy: what "self" and "other" are, and the distance.

Blue's observation carries red in one slot, (dx, dy, visible) = BLUE_OTHER_SLOT; when red is out
of view the slot is all zeros. A SOO definition turns a batch of blue's observations into pairs
(self, other) that differ only in that slot. Two definitions, chosen by name:

  authors  (the default; the paper's construction, from the authors' description and the
           `self_other_overlap` function of their released train.py)
           self  = the REAL observations in which red is out of view (slot = 0, as observed)
           other = the same observations with red placed at a random point inside the visibility
                   radius R around blue, drawn as the authors' code draws it (uniform angle,
                   uniform distance; denser near blue than uniform by area):
                   slot = (r cos t, r sin t, 1), r = R u, u ~ U[0, 1), t ~ U[0, 2 pi)
           Observations in which red is in view take no part. Every "other" is a state blue can
           meet in play: red seen, inside the radius.
  masked   (this repo's first definition)
           self  = every observation with red's slot zeroed
           other = the same observation with red's TRUE offset and visible = 1, wherever red is;
                   under random play red is really in view in ~25% of observations, so most of
                   these "other" inputs (red "seen" beyond the radius) never occur in play.

The SOO value of one pair is the mean over blue's hidden units (both layers, concatenated) of
(h_self - h_other)^2: 0 = full overlap. The fine-tuning term over a batch of pairs is either their
mean ("mse") or, as in the authors' code, log(mean + 1e-25) ("log_mse"); the per-pair values used
for evaluation and the classifier are the plain MSE under both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from soo.rl.env import BLUE_OTHER_SLOT
from soo.rl.maddpg import Actor

SOO_DEFINITIONS = ("authors", "masked")
SOO_DISTANCES = ("mse", "log_mse")
LOG_MSE_EPSILON = 1e-25  # the authors' constant inside log(MSE + eps)
_VISIBLE = BLUE_OTHER_SLOT.stop - 1  # index of red's "visible" flag in blue's observation


@dataclass(frozen=True)
class SOODefinition:
    name: str = "authors"
    visibility_radius: float = 0.75  # the environment's; "authors" places red inside it
    distance: str = "mse"

    def __post_init__(self):
        if self.name not in SOO_DEFINITIONS:
            raise ValueError(f"soo_definition must be one of {SOO_DEFINITIONS}, got {self.name!r}")
        if self.distance not in SOO_DISTANCES:
            raise ValueError(f"soo_distance must be one of {SOO_DISTANCES}, got {self.distance!r}")

    def pairs(
        self, blue_obs: torch.Tensor, other_offset: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(self, other, rows): the pairs built from blue_obs[rows] (rows: int64 indices).

        other_offset is red's true position relative to blue, one row per observation (only
        "masked" reads it). "authors" draws red's placement from `generator`."""
        if self.name == "masked":
            rows = torch.arange(blue_obs.shape[0])
            self_obs = blue_obs.clone()
            self_obs[:, BLUE_OTHER_SLOT] = 0.0
            other_obs = blue_obs.clone()
            other_obs[:, BLUE_OTHER_SLOT.start : _VISIBLE] = other_offset
            other_obs[:, _VISIBLE] = 1.0
            return self_obs, other_obs, rows
        rows = torch.nonzero(blue_obs[:, _VISIBLE] == 0, as_tuple=False).flatten()
        self_obs = blue_obs[rows]
        n = rows.numel()
        radius = self.visibility_radius * torch.rand(n, generator=generator)
        angle = 2 * math.pi * torch.rand(n, generator=generator)
        other_obs = self_obs.clone()
        other_obs[:, BLUE_OTHER_SLOT.start] = radius * torch.cos(angle)
        other_obs[:, BLUE_OTHER_SLOT.start + 1] = radius * torch.sin(angle)
        other_obs[:, _VISIBLE] = 1.0
        return self_obs, other_obs, rows

    def values(
        self, actor: Actor, blue_obs: torch.Tensor, other_offset: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-pair SOO values, the rows of blue_obs they come from)."""
        self_obs, other_obs, rows = self.pairs(blue_obs, other_offset, generator)
        return activation_distance(actor, self_obs, other_obs), rows

    def term(self, pair_values: torch.Tensor) -> torch.Tensor:
        """The fine-tuning term over a batch of per-pair values (MSEs)."""
        mean = pair_values.mean()
        return torch.log(mean + LOG_MSE_EPSILON) if self.distance == "log_mse" else mean


def activation_distance(actor: Actor, obs_a: torch.Tensor, obs_b: torch.Tensor) -> torch.Tensor:
    """Per-row mean squared difference of the actor's hidden activations on two observations."""
    return (actor.hidden_activations(obs_a) - actor.hidden_activations(obs_b)).pow(2).mean(dim=-1)


def per_episode_means(values: torch.Tensor, rows: torch.Tensor, episodes: int, steps: int) -> list[float]:
    """Mean of the pair values per episode (rows index the episodes' concatenated steps, `steps`
    each); NaN for an episode that contributed no pair (under "authors": red always in view)."""
    episode = rows // steps
    total = torch.zeros(episodes, dtype=values.dtype).index_add_(0, episode, values)
    count = torch.zeros(episodes, dtype=values.dtype).index_add_(0, episode, torch.ones_like(values))
    return (total / count).tolist()  # 0 / 0 = nan
