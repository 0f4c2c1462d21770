"""The extra terms of blue's actor loss while the deceptive blue is fine-tuned (SOO and its controls)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from soo.rl.env import BLUE_INDEX
from soo.rl.maddpg import Actor
from soo.rl.overlap import SOODefinition, activation_distance


@dataclass
class FinetuneLoss:
    """Extra terms of blue's actor loss during fine-tuning.

    mode "soo":    soo_weight * the definition's SOO term over the batch's (self, other) pairs
                   (gradient reaches both passes; see soo.rl.overlap)
    mode "random": soo_weight * the same term with h_other replaced by h_self.detach() + noise on
                   the definition's self observations, the noise scaled so that the pairs' MSE is
                   a number drawn uniformly from [0, baseline SOO] (SOO's range while SOO
                   fine-tuning takes it from the baseline's value towards 0); a random constant
                   alone would carry no gradient, this gives a gradient of the same size in a
                   random direction
    mode "mse":    no SOO-like term
    All modes add mse_weight * MSE(blue's action probabilities, the deceptive baseline's).
    A batch with no pair (under "authors": red in view in every sampled observation) adds no
    SOO-like term.
    """

    mode: str
    baseline_actor: Actor
    soo_weight: float
    mse_weight: float
    random_range: tuple[float, float] = (0.0, 0.0)
    generator: torch.Generator | None = None
    definition: SOODefinition = field(default_factory=SOODefinition)

    def __call__(self, agent_index: int, actor: Actor, batch: dict):
        if agent_index != BLUE_INDEX:
            return None
        obs = batch["obs"][BLUE_INDEX]
        logits = actor(obs)
        with torch.no_grad():
            baseline_probs = F.softmax(self.baseline_actor(obs), dim=-1)
        mse = F.mse_loss(F.softmax(logits, dim=-1), baseline_probs)
        loss = self.mse_weight * mse
        logs = {"action_mse": float(mse.detach())}
        if self.mode not in ("soo", "random", "mse"):
            raise ValueError(f"unknown fine-tuning mode {self.mode!r}")
        if self.mode == "mse":
            return loss, logs
        self_obs, other_obs, rows = self.definition.pairs(obs, batch["other_offset"], self.generator)
        logs["soo_pairs"] = rows.numel()
        if rows.numel() == 0:
            return loss, logs
        if self.mode == "soo":
            soo = self.definition.term(activation_distance(actor, self_obs, other_obs))
            loss = loss + self.soo_weight * soo
            logs["soo"] = float(soo.detach())
        else:
            h = actor.hidden_activations(self_obs)
            lo, hi = self.random_range
            value = lo + (hi - lo) * float(torch.rand((), generator=self.generator))
            noise = torch.randn(h.shape, generator=self.generator)
            noise = noise * (value / noise.pow(2).mean().clamp_min(1e-12)).sqrt()
            random_term = self.definition.term((h - (h.detach() + noise)).pow(2).mean(dim=-1))
            loss = loss + self.soo_weight * random_term
            logs["random_term"] = float(random_term.detach())
        return loss, logs
