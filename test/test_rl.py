"""The RL deception experiment: environment, rewards, visibility, SOO term, classifier, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soo.rl.env import BLUE, BLUE_OTHER_SLOT, RED, DeceptionEnvConfig, DeceptionScenario, env, parallel_env, raw_env
from soo.rl.experiment import (
    BLUE_INDEX,
    FinetuneLoss,
    activation_distance,
    classification_accuracy,
    soo_observation_pair,
    soo_values,
)
from soo.rl.maddpg import MADDPG, Actor, MADDPGConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hazard", [False, True])
def test_pettingzoo_api(hazard):
    from pettingzoo.test import api_test, parallel_api_test

    api_test(env(hazard=hazard), num_cycles=60)
    parallel_api_test(parallel_env(hazard=hazard), num_cycles=60)


def placed_env(**config) -> raw_env:
    """A reset env whose world we then move by hand (goal = landmark 0)."""
    e = raw_env(**config)
    e.reset(seed=0)
    world = e.world
    goal, fake = world.landmarks
    for agent in world.agents:
        agent.goal_a = goal
    goal.state.p_pos = np.array([0.8, 0.0])
    fake.state.p_pos = np.array([-0.8, 0.0])
    return e


def step_noop(e: raw_env):
    for _ in e.agents:
        e.step(0)  # AEC: one action per agent, the world moves after the last


def test_deceptive_reward_pays_when_red_is_trapped_and_red_stays_trapped():
    e = placed_env(reward_mode="deceptive", red_distance_weight=1.0, deception_bonus=1.0)
    world = e.world
    world.blue.state.p_pos = world.goal.state.p_pos.copy()
    world.red.state.p_pos = world.fake.state.p_pos + np.array([0.05, 0.0])
    step_noop(e)
    assert world.red_trapped
    # blue at the goal: 0; red at the fake landmark is 1.6 from the goal; + 1 trap bonus.
    assert e.rewards[BLUE] == pytest.approx(1.6 + 1.0, abs=1e-6)
    assert e.rewards[RED] == pytest.approx(-1.6, abs=1e-6)
    # A trapped red cannot leave, whatever it does.
    for _ in range(5):
        for agent in e.agents:
            e.step(2 if agent == RED else 0)  # red pushes right, towards the goal
    np.testing.assert_allclose(world.red.state.p_pos, world.fake.state.p_pos)


def test_honest_reward_ignores_red_and_the_trap():
    e = placed_env(reward_mode="honest")
    world = e.world
    world.blue.state.p_pos = world.goal.state.p_pos + np.array([0.0, 0.3])
    world.red.state.p_pos = world.fake.state.p_pos.copy()
    step_noop(e)
    assert world.red_trapped  # the trap is part of the world in both variants
    assert e.rewards[BLUE] == pytest.approx(-0.3, abs=1e-6)


def test_red_at_the_goal_is_not_trapped():
    e = placed_env(reward_mode="deceptive")
    e.world.red.state.p_pos = e.world.goal.state.p_pos.copy()
    step_noop(e)
    assert not e.world.red_trapped
    assert e.episode_facts()["red_goal_distance"] < 1e-6


def test_hazard_penalises_each_agent_inside_it_and_only_red_sees_it():
    e = placed_env(reward_mode="honest", hazard=True, hazard_penalty=2.0, hazard_radius=0.3)
    world = e.world
    world.hazard.state.p_pos = np.array([0.0, 0.5])
    world.blue.state.p_pos = np.array([0.0, 0.5])  # inside
    world.red.state.p_pos = np.array([0.0, -0.5])  # outside
    step_noop(e)
    blue_distance = np.linalg.norm(world.blue.state.p_pos - world.goal.state.p_pos)
    assert e.rewards[BLUE] == pytest.approx(-blue_distance - 2.0, abs=1e-6)
    assert e.rewards[RED] == pytest.approx(-np.linalg.norm(world.red.state.p_pos - world.goal.state.p_pos), abs=1e-6)
    blue_obs, red_obs = e.observe(BLUE), e.observe(RED)
    assert blue_obs.shape == (11,) and red_obs.shape == (11,)
    np.testing.assert_allclose(red_obs[-2:], world.hazard.state.p_pos - world.red.state.p_pos, atol=1e-6)
    # blue's observation has the same layout as without a hazard
    assert raw_env(hazard=False).observation_space(BLUE).shape == (11,)


def test_visibility_radius_masks_exactly_the_other_agents_slot():
    e = placed_env()
    world = e.world
    world.blue.state.p_pos = np.array([0.0, 0.0])
    world.red.state.p_pos = np.array([0.3, 0.4])  # distance 0.5
    seeing = DeceptionScenario(DeceptionEnvConfig(visibility_radius=0.6))
    blind = DeceptionScenario(DeceptionEnvConfig(visibility_radius=0.4))
    for agent, slot in ((world.blue, BLUE_OTHER_SLOT), (world.red, slice(6, 9))):
        seen, hidden = seeing.observation(agent, world), blind.observation(agent, world)
        changed = np.flatnonzero(seen != hidden)
        assert set(changed) == set(range(slot.start, slot.stop))
        np.testing.assert_array_equal(hidden[slot], 0.0)
        other = world.red if agent is world.blue else world.blue
        np.testing.assert_allclose(seen[slot], [*(other.state.p_pos - agent.state.p_pos), 1.0])


def test_soo_value_is_zero_for_equal_observations_and_positive_otherwise():
    torch.manual_seed(0)
    actor = Actor(11, 5, 64)
    obs = torch.randn(32, 11)
    assert torch.all(activation_distance(actor, obs, obs) == 0)
    offsets = torch.randn(32, 2)
    self_obs, other_obs = soo_observation_pair(obs, offsets)
    assert torch.all(self_obs[:, BLUE_OTHER_SLOT] == 0) and torch.all(other_obs[:, 10] == 1)
    torch.testing.assert_close(other_obs[:, 8:10], offsets)
    assert torch.all(other_obs[:, :8] == obs[:, :8]) and torch.all(self_obs[:, :8] == obs[:, :8])
    values = soo_values(actor, obs, offsets)
    assert values.shape == (32,) and torch.all(values > 0)


def _batch(n=64):
    torch.manual_seed(1)
    return {"obs": [torch.randn(n, 9), torch.randn(n, 11)], "other_offset": torch.randn(n, 2)}


def test_soo_term_gradient_reaches_the_policy_and_the_red_slot_weights():
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    baseline.load_state_dict(actor.state_dict())
    loss_fn = FinetuneLoss("soo", baseline, soo_weight=1.0, mse_weight=1.0)
    loss, logs = loss_fn(BLUE_INDEX, actor, _batch())
    loss.backward()
    assert logs["soo"] > 0 and logs["action_mse"] == 0  # identical to the baseline at the start
    assert actor.fc1.weight.grad[:, BLUE_OTHER_SLOT].abs().sum() > 0
    assert actor.fc2.weight.grad.abs().sum() > 0
    assert loss_fn(0, actor, _batch()) is None  # red's actor gets no extra term


def test_random_control_has_a_gradient_and_a_value_in_soo_range():
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    loss_fn = FinetuneLoss("random", baseline, 1.0, 0.0, random_range=(0.01, 0.02), generator=torch.Generator().manual_seed(0))
    values = []
    for _ in range(20):
        actor.zero_grad()
        loss, logs = loss_fn(BLUE_INDEX, actor, _batch())
        loss.backward()
        values.append(logs["random_term"])
        assert actor.fc2.weight.grad.abs().sum() > 0
    assert 0.01 <= min(values) and max(values) <= 0.02 + 1e-6
    assert np.std(values) > 0


def test_mse_control_adds_only_the_action_term():
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    loss, logs = FinetuneLoss("mse", baseline, 1.0, 1.0)(BLUE_INDEX, actor, _batch())
    assert set(logs) == {"action_mse"} and loss.item() == pytest.approx(logs["action_mse"])


def test_classifier_accuracy_rises_with_episodes_and_is_at_chance_without_signal():
    rng = np.random.default_rng(0)
    deceptive = [rng.normal(1.1, 1.0, 800)]
    honest = [rng.normal(1.0, 1.0, 800)]
    out = classification_accuracy(deceptive, honest, [1, 400, 401], draws=400)
    assert out["episodes"] == [1, 400]  # n above half the pool is left out
    assert out["accuracy"][0] < 0.6 < 0.85 < out["accuracy"][1]
    same = classification_accuracy(honest, honest, [50], draws=400)
    assert abs(same["accuracy"][0] - 0.5) < 0.1


def test_checkpoint_round_trip(tmp_path):
    agent = MADDPG([9, 11], 5, MADDPGConfig())
    agent.save(tmp_path / "ckpt", {"stage": "x"})
    loaded = MADDPG.load(tmp_path / "ckpt")
    obs = torch.randn(4, 11)
    torch.testing.assert_close(loaded.actors[1](obs), agent.actors[1](obs))
    assert json.loads((tmp_path / "ckpt" / "meta.json").read_text())["stage"] == "x"
    assert not list(tmp_path.glob("ckpt/*.pt"))  # safetensors, no pickle


def test_quick_run_end_to_end_writes_the_report(tmp_path):
    out = tmp_path / "rl"
    cmd = [sys.executable, str(REPO / "rl_deception.py"), "all", "--quick", "--seeds", "0", "1", "--jobs", "2", "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("report.md", "summary.json", "learning_curves.png", "classifier_accuracy.png", "behaviour.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "n = 2" in report and "hazard variant" in report and "SOO classifier" in report
    summary = json.loads((out / "summary.json").read_text())
    for variant in ("basic", "hazard"):
        conditions = summary["variants"][variant]["conditions"]
        assert set(conditions) == {"deceptive", "honest", "soo", "random", "mse", "soo_only"}
        assert len(conditions["soo"]["red_trapped"]["per_seed"]) == 2
        assert summary["variants"][variant]["classifier"]["pairs"] == 4
        assert (out / "seed_1" / variant / "soo" / "checkpoint" / "weights.safetensors").exists()
    # Rerunning a finished seed reuses its checkpoints and reproduces its evaluation exactly.
    before = json.loads((out / "seed_0" / "results.json").read_text())
    rerun = subprocess.run([sys.executable, str(REPO / "rl_deception.py"), "run", "--quick", "--seed", "0", "--no_progress",
                            "--output_dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "reusing" in rerun.stdout
    after = json.loads((out / "seed_0" / "results.json").read_text())
    # ... but not when the run asks for other settings than the saved stages were trained with.
    other = subprocess.run([sys.executable, str(REPO / "rl_deception.py"), "run", "--quick", "--seed", "0", "--no_progress",
                            "--soo_weight", "5", "--output_dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "soo_weight" in other.stderr and "other settings" in other.stderr, other.stderr[-2000:]
    for variant in ("basic", "hazard"):
        assert after["variants"][variant]["conditions"] == before["variants"][variant]["conditions"]
        assert after["variants"][variant]["train_seconds"] == before["variants"][variant]["train_seconds"]


def test_every_condition_plays_against_the_honest_pairs_red(tmp_path):
    from safetensors.torch import load_file

    from soo.rl.experiment import RLExperimentConfig, run_seed

    config = RLExperimentConfig.quick()
    config = RLExperimentConfig(**{**config.__dict__, "honest_episodes": 150, "deceptive_episodes": 150,
                                   "finetune_episodes": 50, "eval_episodes": 20, "variants": ("basic",)})
    run_seed(config, 0, tmp_path, progress=False)
    red = {}
    for condition in ("honest", "deceptive", "soo", "random", "mse", "soo_only"):
        weights = load_file(str(tmp_path / "seed_0" / "basic" / condition / "checkpoint" / "weights.safetensors"))
        red[condition] = {k: v for k, v in weights.items() if k.startswith("actor0.")}
        blue = weights["actor1.fc1.weight"]
        red_reference = red["honest"]
        for key, value in red[condition].items():
            torch.testing.assert_close(value, red_reference[key])
        if condition != "honest":
            assert not torch.equal(blue, load_file(str(tmp_path / "seed_0" / "basic" / "honest" / "checkpoint" / "weights.safetensors"))["actor1.fc1.weight"])


def test_blind_evaluation_hides_red_from_blue_only():
    """A blue whose action depends only on red's visible flag behaves differently when blind."""
    from soo.rl.experiment import evaluate

    agent = MADDPG([9, 11], 5, MADDPGConfig())
    with torch.no_grad():
        for p in agent.actors[1].parameters():
            p.zero_()
        agent.actors[1].fc1.weight[0, 10] = 1.0  # hidden unit 0 = "red visible"
        agent.actors[1].fc2.weight[0, 0] = 1.0
        agent.actors[1].out.weight[1, 0] = 1.0  # visible -> move left, else no-op
    config = DeceptionEnvConfig(visibility_radius=10.0)  # red always in view
    seeing = evaluate(agent, config, 5, 0, {})
    blind = evaluate(agent, config, 5, 0, {}, blue_blind=True)
    assert seeing["per_episode"]["blue_goal_distance"] != blind["per_episode"]["blue_goal_distance"]


def test_training_is_reproducible_from_its_seed():
    from soo.rl.experiment import train

    config = MADDPGConfig(batch_size=64, warmup_steps=200)
    weights = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        agent = MADDPG([9, 11], 5, config)
        curve = train(agent, DeceptionEnvConfig(), 40, seed, progress=False)
        weights.append((agent.actors[1].fc1.weight.detach().clone(), [row["blue_return"] for row in curve]))
    assert torch.equal(weights[0][0], weights[1][0]) and weights[0][1] == weights[1][1]
    assert not torch.equal(weights[0][0], weights[2][0])
