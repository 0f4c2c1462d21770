"""The RL deception experiment: environment, rewards, visibility, SOO term, classifier, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soo.rl.classifier import classification_accuracy, one_episode_separation
from soo.rl.config import RLExperimentConfig
from soo.rl.env import (
    BLUE,
    BLUE_INDEX,
    BLUE_OTHER_SLOT,
    ENV_PRESETS,
    RED,
    DeceptionEnvConfig,
    DeceptionScenario,
    env,
    parallel_env,
    raw_env,
)
from soo.rl.finetune_loss import FinetuneLoss
from soo.rl.maddpg import MADDPG, Actor, MADDPGConfig
from soo.rl.overlap import LOG_MSE_EPSILON, SOODefinition, activation_distance, per_episode_means

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hazard", [False, True])
@pytest.mark.parametrize("preset", ["ours", "paper"])
def test_pettingzoo_api(hazard, preset):
    from pettingzoo.test import api_test, parallel_api_test

    config = {**ENV_PRESETS[preset].__dict__, "hazard": hazard}
    api_test(env(**config), num_cycles=60)
    parallel_api_test(parallel_env(**config), num_cycles=60)


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


def _blue_observations(n: int, radius: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Blue observations as the environment writes them: red's slot filled only within `radius`."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 11, generator=generator)
    offsets = 2 * torch.rand(n, 2, generator=generator) - 1
    seen = offsets.norm(dim=1) <= radius
    obs[:, BLUE_OTHER_SLOT] = 0.0
    obs[seen, 8:10] = offsets[seen]
    obs[seen, 10] = 1.0
    return obs, offsets


def test_masked_pairs_zero_reds_slot_for_self_and_write_its_true_offset_for_other():
    torch.manual_seed(0)
    actor = Actor(11, 5, 64)
    obs, offsets = _blue_observations(32, 0.75)
    assert torch.all(activation_distance(actor, obs, obs) == 0)
    self_obs, other_obs, rows = SOODefinition("masked").pairs(obs, offsets)
    assert rows.tolist() == list(range(32))
    assert torch.all(self_obs[:, BLUE_OTHER_SLOT] == 0) and torch.all(other_obs[:, 10] == 1)
    torch.testing.assert_close(other_obs[:, 8:10], offsets)
    assert torch.all(other_obs[:, :8] == obs[:, :8]) and torch.all(self_obs[:, :8] == obs[:, :8])
    values, _ = SOODefinition("masked").values(actor, obs, offsets)
    assert values.shape == (32,) and torch.all(values > 0)


def test_authors_pairs_use_real_out_of_view_observations_and_place_red_inside_the_radius():
    radius = 0.4
    obs, offsets = _blue_observations(400, radius)
    out_of_view = obs[:, 10] == 0
    assert 0 < out_of_view.sum() < 400
    self_obs, other_obs, rows = SOODefinition("authors", radius).pairs(obs, offsets, torch.Generator().manual_seed(1))
    assert rows.tolist() == torch.nonzero(out_of_view).flatten().tolist()
    torch.testing.assert_close(self_obs, obs[rows])  # the real observations, unchanged
    assert torch.all(self_obs[:, BLUE_OTHER_SLOT] == 0)
    placed = other_obs[:, 8:10].norm(dim=1)
    assert torch.all(other_obs[:, 10] == 1) and torch.all(placed < radius)
    assert placed.max() > 0.9 * radius and placed.min() < 0.1 * radius  # spread over the disc, not one point
    assert torch.all(other_obs[:, :8] == self_obs[:, :8])
    # the placement does not look at red's true position
    _, again, _ = SOODefinition("authors", radius).pairs(obs, -offsets, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, other_obs)


def test_soo_is_zero_when_blues_activations_ignore_red():
    obs, offsets = _blue_observations(200, 0.5)
    actor = Actor(11, 5, 64)
    with torch.no_grad():
        actor.fc1.weight[:, BLUE_OTHER_SLOT] = 0.0
    for name in ("authors", "masked"):
        values, rows = SOODefinition(name, 0.5).values(actor, obs, offsets, torch.Generator().manual_seed(0))
        assert rows.numel() > 0 and torch.all(values == 0), name


def test_log_mse_distance_is_the_log_of_the_mean_pair_value():
    values = torch.tensor([0.1, 0.3])
    assert SOODefinition(distance="mse").term(values).item() == pytest.approx(0.2)
    assert SOODefinition(distance="log_mse").term(values).item() == pytest.approx(np.log(0.2 + LOG_MSE_EPSILON))
    assert SOODefinition(distance="log_mse").term(torch.zeros(3)).item() == pytest.approx(np.log(LOG_MSE_EPSILON))
    with pytest.raises(ValueError, match="soo_definition"):
        SOODefinition("other")
    with pytest.raises(ValueError, match="soo_distance"):
        SOODefinition(distance="l1")


def test_per_episode_means_leave_episodes_without_pairs_out():
    values = torch.tensor([1.0, 3.0, 5.0])
    rows = torch.tensor([0, 1, 6])  # 3 steps per episode: episodes 0, 0 and 2
    means = per_episode_means(values, rows, episodes=3, steps=3)
    assert means[0] == 2.0 and np.isnan(means[1]) and means[2] == 5.0


def _batch(n=64, radius=0.75):
    obs, offsets = _blue_observations(n, radius, seed=1)
    return {"obs": [torch.randn(n, 9), obs], "other_offset": offsets}


@pytest.mark.parametrize("name", ["authors", "masked"])
@pytest.mark.parametrize("distance", ["mse", "log_mse"])
def test_soo_term_gradient_reaches_the_policy_and_the_red_slot_weights(name, distance):
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    baseline.load_state_dict(actor.state_dict())
    definition = SOODefinition(name, 0.75, distance)
    loss_fn = FinetuneLoss("soo", baseline, 1.0, 1.0, generator=torch.Generator().manual_seed(0), definition=definition)
    loss, logs = loss_fn(BLUE_INDEX, actor, _batch())
    loss.backward()
    assert logs["action_mse"] == 0  # identical to the baseline at the start
    assert logs["soo"] > 0 if distance == "mse" else np.isfinite(logs["soo"])
    assert 0 < logs["soo_pairs"] <= 64
    assert actor.fc1.weight.grad[:, BLUE_OTHER_SLOT].abs().sum() > 0
    assert actor.fc2.weight.grad.abs().sum() > 0
    assert loss_fn(0, actor, _batch()) is None  # red's actor gets no extra term


def test_authors_soo_adds_nothing_to_a_batch_where_red_is_always_in_view():
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    loss_fn = FinetuneLoss("soo", baseline, 1.0, 1.0, definition=SOODefinition("authors", 3.0))
    loss, logs = loss_fn(BLUE_INDEX, actor, _batch(radius=3.0))  # every offset is within 3.0
    assert logs["soo_pairs"] == 0 and "soo" not in logs and loss.item() == pytest.approx(logs["action_mse"])


def test_random_control_has_a_gradient_and_a_value_in_soo_range():
    actor, baseline = Actor(11, 5, 64), Actor(11, 5, 64)
    loss_fn = FinetuneLoss(
        "random",
        baseline,
        1.0,
        0.0,
        random_range=(0.01, 0.02),
        generator=torch.Generator().manual_seed(0),
        definition=SOODefinition("masked"),
    )
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
    cmd = [
        sys.executable,
        str(REPO / "rl_deception.py"),
        "all",
        "--quick",
        "--seeds",
        "0",
        "1",
        "--jobs",
        "2",
        "--soo_definitions",
        "authors",
        "masked",
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "report.md").stat().st_size > 0 and (out / "summary.json").stat().st_size > 0
    for run in ("frozen-red_authors", "frozen-red_masked"):
        for plot in ("learning_curves", "classifier_accuracy", "behaviour"):
            assert (out / f"{run}_{plot}.png").stat().st_size > 0, (run, plot)
    report = (out / "report.md").read_text()
    assert "n = 2" in report and "hazard variant" in report and "SOO classifier" in report and "Side by side" in report
    assert (
        "| frozen-red | authors | basic | soo | 2 |" in report
        and "| frozen-red | masked | hazard | mse | 2 |" in report
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"frozen-red/authors", "frozen-red/masked"}
    for run, variant in ((r, v) for r in summary for v in ("basic", "hazard")):
        conditions = summary[run]["variants"][variant]["conditions"]
        assert set(conditions) == {"deceptive", "honest", "soo", "random", "mse", "soo_only"}
        assert len(conditions["soo"]["red_trapped"]["per_seed"]) == 2
        assert summary[run]["variants"][variant]["classifier"]["pairs"] == 4
    # The baselines and the mse control are trained once and shared; SOO-dependent stages per definition.
    for variant in ("basic", "hazard"):
        base = out / "seed_1" / variant / "frozen-red"
        for stage in ("honest", "deceptive", "mse", "authors/soo", "masked/soo", "authors/random", "masked/soo_only"):
            assert (base / stage / "checkpoint" / "weights.safetensors").exists(), stage
        assert not (base / "authors" / "mse").exists()
    # Rerunning a finished seed reuses its checkpoints and reproduces its evaluation exactly.
    results = out / "seed_0" / "results_frozen-red_authors.json"
    before = json.loads(results.read_text())
    rerun = subprocess.run(
        [
            sys.executable,
            str(REPO / "rl_deception.py"),
            "run",
            "--quick",
            "--seed",
            "0",
            "--no_progress",
            "--output_dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "reusing" in rerun.stdout and "episodes in" not in rerun.stdout
    after = json.loads(results.read_text())
    # ... but not when the run asks for other settings than the saved stages were trained with.
    other = subprocess.run(
        [
            sys.executable,
            str(REPO / "rl_deception.py"),
            "run",
            "--quick",
            "--seed",
            "0",
            "--no_progress",
            "--soo_weight",
            "5",
            "--output_dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode != 0 and "soo_weight" in other.stderr and "other settings" in other.stderr, other.stderr[
        -2000:
    ]
    for variant in ("basic", "hazard"):
        # NaN (an episode without a pair) is not equal to itself: compare the JSON text
        assert json.dumps(after["variants"][variant]["conditions"]) == json.dumps(
            before["variants"][variant]["conditions"]
        )
        assert after["variants"][variant]["train_seconds"] == before["variants"][variant]["train_seconds"]
    # One variant alone reuses that variant's stages (their seeds do not depend on the other
    # variants asked for) and keeps the other variant's results in the seed's file.
    hazard_only = subprocess.run(
        [
            sys.executable,
            str(REPO / "rl_deception.py"),
            "run",
            "--quick",
            "--seed",
            "0",
            "--no_progress",
            "--variants",
            "hazard",
            "--output_dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert hazard_only.returncode == 0, hazard_only.stderr[-3000:]
    assert "reusing" in hazard_only.stdout and "episodes in" not in hazard_only.stdout
    kept = json.loads(results.read_text())
    assert list(kept["variants"]) == ["basic", "hazard"] and kept["config"]["variants"] == ["basic", "hazard"]
    assert json.dumps(kept["variants"]["basic"]) == json.dumps(after["variants"]["basic"])
    assert json.dumps(kept["variants"]["hazard"]["conditions"]) == json.dumps(after["variants"]["hazard"]["conditions"])
    # A seed with the basic task only: the report summarises each variant over the seeds that ran it.
    basic_only = subprocess.run(
        [
            sys.executable,
            str(REPO / "rl_deception.py"),
            "run",
            "--quick",
            "--seed",
            "2",
            "--no_progress",
            "--variants",
            "basic",
            "--output_dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert basic_only.returncode == 0, basic_only.stderr[-3000:]
    report_run = subprocess.run(
        [sys.executable, str(REPO / "rl_deception.py"), "report", "--output_dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report_run.returncode == 0, report_run.stderr[-3000:]
    variants = json.loads((out / "summary.json").read_text())["frozen-red/authors"]["variants"]
    assert variants["basic"]["seeds"] == [0, 1, 2] and variants["hazard"]["seeds"] == [0, 1]
    report = (out / "report.md").read_text()
    assert (
        "| frozen-red | authors | basic | soo | 3 |" in report
        and "| frozen-red | authors | hazard | soo | 2 |" in report
    )


def _actor_weights(folder: Path, agent: int) -> dict:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "checkpoint" / "weights.safetensors"))
    return {k: v for k, v in weights.items() if k.startswith(f"actor{agent}.")}


def _assert_same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("protocol", ["frozen-red", "co-trained"])
def test_who_learns_in_each_protocol(tmp_path, protocol):
    """frozen-red: every condition plays against the honest pair's red, unchanged; co-trained: the
    deceptive pair starts from scratch and red keeps learning while blue is fine-tuned."""
    from soo.rl.seed import run_seed

    config = RLExperimentConfig.quick(
        protocol=protocol,
        honest_episodes=150,
        deceptive_episodes=150,
        finetune_episodes=50,
        eval_episodes=20,
        variants=("basic",),
    )
    run_seed(config, 0, tmp_path, progress=False)
    base = tmp_path / "seed_0" / "basic" / protocol
    folders = {c: base / c for c in ("honest", "deceptive", "mse")} | {
        c: base / "authors" / c for c in ("soo", "random", "soo_only")
    }
    red = {c: _actor_weights(f, 0) for c, f in folders.items()}
    blue = {c: _actor_weights(f, 1) for c, f in folders.items()}
    for condition in ("deceptive", "soo", "random", "mse", "soo_only"):
        assert not _assert_same(blue[condition], blue["honest"]), condition
        if protocol == "frozen-red":
            assert _assert_same(red[condition], red["honest"]), condition
        else:
            assert not _assert_same(red[condition], red["honest"]), condition
            if condition != "deceptive":
                assert not _assert_same(red[condition], red["deceptive"]), condition
    results = json.loads((tmp_path / "seed_0" / f"results_{protocol}_authors.json").read_text())
    assert results["protocol"] == protocol and results["soo_definition"] == "authors"
    assert results["config"]["honest_episodes"] == 150


def test_classifier_only_runs_share_the_baselines_and_report_the_accuracy_curve(tmp_path):
    from soo.rl.report import write_classifier_report
    from soo.rl.seed import run_classifier_seed, run_seed

    config = RLExperimentConfig.quick(
        honest_episodes=120,
        deceptive_episodes=120,
        finetune_episodes=30,
        eval_episodes=40,
        variants=("basic",),
        soo_definitions=("authors", "masked"),
    )
    for seed in (0, 1):
        data = run_classifier_seed(config, seed, tmp_path, progress=False)
        assert set(data) == {"authors", "masked"}
        block = data["masked"]["variants"]["basic"]
        assert len(block["honest"]["soo"]) == len(block["deceptive"]["soo"]) == 40
        assert not (tmp_path / f"seed_{seed}" / "basic" / "frozen-red" / "authors").exists()  # no fine-tuning
    # the same play measured under both definitions: the masked values exist for every episode
    assert np.all(np.isfinite(block["deceptive"]["soo"]))
    report = write_classifier_report(tmp_path)
    text = report.read_text()
    assert (
        "## Run `frozen-red/authors`" in text
        and "## Run `frozen-red/masked`" in text
        and "4 (deceptive, honest) pairs" in text
    )
    summary = json.loads((tmp_path / "classifier_summary.json").read_text())
    assert summary["frozen-red/masked"]["basic"]["episodes"] == [1, 2, 5, 10, 20] and summary["frozen-red/masked"][
        "basic"
    ]["seeds"] == [0, 1]
    assert (
        0.0 <= summary["frozen-red/masked"]["basic"]["one_episode"]["pair_min"] <= 1.0
        and "Exactly, on single episodes" in text
    )
    assert (tmp_path / "frozen-red_masked_classifier_only.png").stat().st_size > 0
    assert (tmp_path / "frozen-red_masked_classifier_soo_values.png").stat().st_size > 0
    # the main experiment on the same folder reuses the baselines the classifier trained
    before = (
        tmp_path / "seed_0" / "basic" / "frozen-red" / "deceptive" / "checkpoint" / "weights.safetensors"
    ).read_bytes()
    run_seed(config, 0, tmp_path, progress=False)
    assert (
        tmp_path / "seed_0" / "basic" / "frozen-red" / "deceptive" / "checkpoint" / "weights.safetensors"
    ).read_bytes() == before


def test_classifier_accuracy_names_the_worst_pair():
    rng = np.random.default_rng(0)
    honest = [rng.normal(0.0, 1.0, 200) for _ in range(3)]
    deceptive = [rng.normal(3.0, 1.0, 200), rng.normal(0.2, 1.0, 200), rng.normal(3.0, 1.0, 200)]
    out = classification_accuracy(deceptive, honest, [1, 50], draws=200)
    assert [pair[0] for pair in out["worst_pair"]] == [1, 1]  # the barely deceptive policy
    assert out["pair_min"][1] < 0.95 < out["pair_max"][1]


def test_one_episode_separation_counts_every_episode_pair_exactly():
    deceptive = [np.array([2.0, 3.0]), np.array([1.0])]
    honest = [np.array([1.0, 2.5])]
    out = one_episode_separation(deceptive, honest)
    # pair (0, 0): 2>1, 2<2.5, 3>1, 3>2.5 -> 3/4; pair (1, 0): 1 ties 1 (half), 1<2.5 -> 1/4
    assert out["worst_pair"] == [1, 0] and out["pair_min"] == pytest.approx(0.25)
    assert out["accuracy"] == pytest.approx(0.5) and out["margin"] == pytest.approx(1.0 / 2.5)
    # every pair apart: the smaller margin names the worst pair
    apart = one_episode_separation([np.array([3.0, 4.0]), np.array([1.8, 5.0])], [np.array([0.5, 1.5])])
    assert (
        apart["pair_min"] == 1.0 and apart["worst_pair"] == [1, 0] and apart["worst_pair_margin"] == pytest.approx(1.2)
    )
    assert np.isnan(one_episode_separation([np.array([])], [np.array([1.0])])["accuracy"])  # no SOO values: no verdict


def test_protocols_fill_in_their_own_episode_counts():
    assert (RLExperimentConfig().honest_episodes, RLExperimentConfig().finetune_episodes) == (10_000, 5_000)
    co = RLExperimentConfig(protocol="co-trained", finetune_episodes=7)
    assert (co.honest_episodes, co.deceptive_episodes, co.finetune_episodes) == (25_000, 25_000, 7)
    with pytest.raises(ValueError, match="protocol"):
        RLExperimentConfig(protocol="frozen")
    with pytest.raises(ValueError, match="soo_definition"):
        RLExperimentConfig(soo_definitions=("authors", "mine"))


def test_blind_evaluation_hides_red_from_blue_only():
    """A blue whose action depends only on red's visible flag behaves differently when blind."""
    from soo.rl.evaluation import evaluate

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
    from soo.rl.training import train

    config = MADDPGConfig(batch_size=64, warmup_steps=200)
    weights = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        agent = MADDPG([9, 11], 5, config)
        curve = train(agent, DeceptionEnvConfig(), 40, seed, progress=False)
        weights.append((agent.actors[1].fc1.weight.detach().clone(), [row["blue_return"] for row in curve]))
    assert torch.equal(weights[0][0], weights[1][0]) and weights[0][1] == weights[1][1]
    assert not torch.equal(weights[0][0], weights[2][0])


def test_paper_preset_starts_blue_near_red_and_pays_sparse_rewards():
    paper = ENV_PRESETS["paper"]
    assert paper.visibility_radius == 0.125 and paper.reward_shape == "sparse"
    e = raw_env(**{**paper.__dict__, "reward_mode": "deceptive"})
    for seed in range(20):
        e.reset(seed=seed)
        world = e.world
        assert np.linalg.norm(world.blue.state.p_pos - world.red.state.p_pos) <= 0.125 + 1e-9
        assert all(np.all(np.abs(x.state.p_pos) <= 0.825) for x in world.landmarks + [world.red])
        assert e.observe(BLUE)[10] == 1.0  # the episode starts with red in view
    e = placed_env(**{**paper.__dict__, "reward_mode": "deceptive"})
    world = e.world
    world.blue.state.p_pos = world.goal.state.p_pos + np.array([0.1, 0.0])  # within 0.16 of the goal
    world.red.state.p_pos = world.fake.state.p_pos.copy()  # trapped
    step_noop(e)
    assert e.rewards[BLUE] == pytest.approx(5.0 + 10.0) and e.rewards[RED] == 0.0
    world.blue.state.p_pos = world.fake.state.p_pos + np.array([0.0, 0.1])  # near red, away from the goal
    step_noop(e)
    assert e.rewards[BLUE] == pytest.approx(10.0) and e.rewards[RED] == pytest.approx(1.0)
    for walls, arena in ((True, e), (False, placed_env(**{**paper.__dict__, "arena_extent": None}))):
        arena.world.blue.state.p_pos = np.array([0.98, 0.0])
        for _ in range(6):
            for agent in arena.agents:
                arena.step(2 if agent == BLUE else 0)  # blue pushes right, into the wall at 1.0
        assert (arena.world.blue.state.p_pos[0] == 1.0) if walls else (arena.world.blue.state.p_pos[0] > 1.05)
    honest = placed_env(**{**paper.__dict__, "reward_mode": "honest"})
    honest.world.blue.state.p_pos = honest.world.goal.state.p_pos.copy()
    honest.world.red.state.p_pos = honest.world.fake.state.p_pos.copy()
    step_noop(honest)
    assert honest.world.red_trapped and honest.rewards[BLUE] == pytest.approx(5.0)
