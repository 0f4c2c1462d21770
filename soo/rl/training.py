"""MADDPG training on the deception task: stepping the environment, the replay buffer, one
learning-curve row per episode."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from soo.rl.env import BLUE, BLUE_INDEX, N_ACTIONS, RED, RED_INDEX, DeceptionEnvConfig, parallel_env
from soo.rl.finetune_loss import FinetuneLoss
from soo.rl.maddpg import MADDPG, ReplayBuffer


class Rollout:
    """Steps the PettingZoo parallel env and hands out observations as [red, blue] arrays."""

    def __init__(self, env_config: DeceptionEnvConfig, seed: int):
        self.env = parallel_env(**asdict(env_config))
        self.raw = self.env.unwrapped
        self.world = self.raw.world
        self.seed = seed
        self.first = True

    def reset(self) -> list[np.ndarray]:
        obs, _ = self.env.reset(seed=self.seed if self.first else None)
        self.first = False
        return [obs[RED], obs[BLUE]]

    def other_offset(self) -> np.ndarray:
        return (self.world.red.state.p_pos - self.world.blue.state.p_pos).astype(np.float32)

    def step(self, actions: list[int]):
        """What the parallel wrapper's step does, on the raw AEC env directly: its wrapper layers
        (order and bounds checks, attribute forwarding) and its discarded `last()` observations
        took about half of all training time. Same calls in the same order: same numbers."""
        raw = self.raw
        by_name = {RED: actions[RED_INDEX], BLUE: actions[BLUE_INDEX]}
        for agent in raw.agents:  # one cycle; the world moves after the last agent's action
            raw.step(by_name[agent])
        rewards = [raw.rewards[RED], raw.rewards[BLUE]]
        obs = [raw.observe(RED), raw.observe(BLUE)]
        while raw.agents and (raw.terminations[raw.agent_selection] or raw.truncations[raw.agent_selection]):
            raw.step(None)  # the episode is over: agents leave, as the wrapper makes them
        self.env.agents = raw.agents
        return obs, rewards, not raw.agents

    def facts(self) -> dict:
        return self.env.unwrapped.episode_facts()


def observation_dims(env_config: DeceptionEnvConfig) -> list[int]:
    env = parallel_env(**asdict(env_config))
    return [env.observation_space(RED).shape[0], env.observation_space(BLUE).shape[0]]


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train(
    agent: MADDPG,
    env_config: DeceptionEnvConfig,
    episodes: int,
    seed: int,
    extra_loss: FinetuneLoss | None = None,
    desc: str = "train",
    progress: bool = True,
) -> list[dict]:
    """MADDPG training for `episodes` episodes; returns one learning-curve row per episode."""
    rng = seed_everything(seed)
    rollout = Rollout(env_config, seed)
    buffer = ReplayBuffer(
        min(agent.config.buffer_size, episodes * env_config.max_cycles),
        agent.obs_dims,
        N_ACTIONS,
        extra={"other_offset": 2},
    )
    eye = np.eye(N_ACTIONS, dtype=np.float32)
    curve, steps, logs = [], 0, {}
    for episode in tqdm(range(episodes), desc=desc, disable=not progress, mininterval=2.0):
        obs, done, returns = rollout.reset(), False, [0.0, 0.0]
        while not done:
            offset = rollout.other_offset()
            actions = agent.act(obs, explore=True)
            next_obs, rewards, done = rollout.step(actions)
            buffer.add(obs, [eye[a] for a in actions], rewards, next_obs, {"other_offset": offset})
            obs = next_obs
            returns = [r + x for r, x in zip(returns, rewards)]
            steps += 1
            if steps % agent.config.update_every == 0 and buffer.size >= max(
                agent.config.warmup_steps, agent.config.batch_size
            ):
                logs = agent.update(buffer.sample(agent.config.batch_size, rng), extra_loss)
        facts = rollout.facts()
        curve.append(
            {
                "episode": episode,
                "red_return": returns[RED_INDEX],
                "blue_return": returns[BLUE_INDEX],
                "red_trapped": float(facts["red_trapped"]),
                "blue_goal_distance": facts["blue_goal_distance"],
                "red_goal_distance": facts["red_goal_distance"],
                **logs,
            }
        )
    return curve
