"""The RL experiment's settings: its conditions, training protocols, variants and RLExperimentConfig.

One seed runs, for each environment variant ("basic", and "hazard" = the critique's variant):
  honest     MADDPG from scratch, both agents learning, honest blue reward. Red learns that blue
             heads for the goal and follows it: a trusting red.
  deceptive  a deceptive blue (deceptive blue reward), trained under one of two protocols:
             frozen-red  (ours) a new blue against the honest pair's red, frozen: blue learns to
                         exploit red's trust by leading it into the trap at the non-goal landmark.
                         (Co-training both from scratch with the deceptive reward reached only ~50%
                         trapping in 30k episodes here: red keeps adapting; a frozen trusting red
                         is also what makes "red at the non-goal landmark" a measure of blue's
                         deception alone.)
             co-trained  (the paper's) blue and red from scratch, both learning, deceptive blue reward;
                         red keeps learning in every later stage too, as in the authors' code.
  soo        the deceptive blue fine-tuned: deceptive reward + SOO on blue's hidden activations
             + MSE keeping blue's action probabilities near the deceptive baseline's
  random     the same, with SOO replaced by a random-target term whose value is drawn from
             SOO's empirical range (see soo.rl.finetune_loss.FinetuneLoss)
  mse        the same with the MSE term only
  soo_only   an ablation beyond the paper's controls: SOO without the MSE term
Under frozen-red every condition plays against the same frozen red, so differences in where red
ends up come from blue; under co-trained each condition plays against its own red.

What "self" and "other" are for SOO is a named definition (soo.rl.overlap: "authors", the
default, or "masked"); one seed can fine-tune and evaluate under several definitions, sharing the
baselines and the mse control (which do not depend on it). Where each stage lives: soo.rl.stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from soo.rl.env import DeceptionEnvConfig
from soo.rl.maddpg import MADDPGConfig
from soo.rl.overlap import SOODefinition

VARIANTS = ("basic", "hazard")
BASELINES = ("deceptive", "honest")
# condition -> (FinetuneLoss mode, whether the action-MSE term is on). soo_only is an extra
# ablation beyond the paper's controls: does the MSE anchor alone keep the deceptive behaviour?
FINETUNES = {"soo": ("soo", True), "random": ("random", True), "mse": ("mse", True), "soo_only": ("soo", False)}
CONDITIONS = BASELINES + tuple(FINETUNES)
# How the deceptive pair is trained and who learns afterwards (not eval's answer-scoring protocols).
TRAINING_PROTOCOLS = ("frozen-red", "co-trained")
# (honest, deceptive, fine-tuning) episodes when not given. frozen-red: the honest pair plateaus by
# ~4k here and trapping took off after ~10-15k; co-trained: the paper's 25k pretraining and its
# 10k fine-tuning (the upper end of "up to 10k").
PROTOCOL_EPISODES = {"frozen-red": (10_000, 30_000, 5_000), "co-trained": (25_000, 25_000, 10_000)}


def depends_on_definition(condition: str) -> bool:
    """Whether a stage's training depends on the SOO definition (the mse control does not)."""
    mode, _ = FINETUNES.get(condition, ("mse", True))
    return mode != "mse"


@dataclass
class RLExperimentConfig:
    protocol: str = "frozen-red"
    honest_episodes: int | None = None  # None: the protocol's (PROTOCOL_EPISODES), filled in at construction
    deceptive_episodes: int | None = None
    finetune_episodes: int | None = None
    eval_episodes: int = 1_000
    soo_definitions: tuple[str, ...] = ("authors",)  # each gets its own fine-tuned stages and evaluation
    soo_distance: str = "mse"  # the fine-tuning term: "mse" or the authors' "log_mse"
    soo_weight: float = 1.0
    mse_weight: float = 1.0
    variants: tuple[str, ...] = VARIANTS
    env: DeceptionEnvConfig = field(default_factory=DeceptionEnvConfig)
    maddpg: MADDPGConfig = field(default_factory=MADDPGConfig)
    eval_seed_offset: int = 1_000_000  # evaluation episodes never share seeds with training

    def __post_init__(self):
        if self.protocol not in TRAINING_PROTOCOLS:
            raise ValueError(f"protocol must be one of {TRAINING_PROTOCOLS}, got {self.protocol!r}")
        self.soo_definitions = tuple(dict.fromkeys(self.soo_definitions))
        if not self.soo_definitions:
            raise ValueError("at least one SOO definition is needed")
        for name in self.soo_definitions:
            self.definition(name)  # SOODefinition checks the name and the distance
        defaults = PROTOCOL_EPISODES[self.protocol]
        for key, default in zip(("honest_episodes", "deceptive_episodes", "finetune_episodes"), defaults):
            if getattr(self, key) is None:
                setattr(self, key, default)

    def definition(self, name: str) -> SOODefinition:
        return SOODefinition(name, self.env.visibility_radius, self.soo_distance)

    def definition_tag(self, name: str) -> str:
        """Folder and file name part of one definition's results."""
        return name if self.soo_distance == "mse" else f"{name}-{self.soo_distance}"

    @classmethod
    def quick(cls, **overrides) -> RLExperimentConfig:
        """Smoke-run sizes (~30 s for two seeds on 2 CPU cores): checks plumbing, not learning."""
        sizes = dict(
            honest_episodes=300,
            deceptive_episodes=300,
            finetune_episodes=100,
            eval_episodes=100,
            maddpg=MADDPGConfig(batch_size=256, warmup_steps=1_000),
        )
        return cls(**{**sizes, **overrides})
