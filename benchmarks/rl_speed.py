"""Benchmark: MADDPG training speed of the RL experiment, the way it was vs now, interleaved, with
a fingerprint proving both give the same numbers.

    python -m benchmarks.rl_speed                        # 300 episodes per stage, 3 rounds
    python -m benchmarks.rl_speed --episodes 1000 --repeats 2

Methods, each training the honest and the deceptive stage of rl_deception.py from the same seed
(one CPU thread, as rl_deception.py), in rounds A B A B ... so machine noise hits both alike:
  before   the PettingZoo parallel wrapper's step (wrapper layers, a discarded `last()`
           observation per agent), actors called as modules under no_grad, numpy distances;
  after    rl_deception.py's code: the raw AEC env stepped directly, the actor's operations
           without the module-call machinery under inference_mode, scalar distances.
Reports episodes/s per method (median over rounds), the ratio, and a SHA-256 fingerprint of each
method's learning curves, final weights of every network, and a 50-episode greedy evaluation:
equal fingerprints mean identical numbers, bit for bit. A script, not a test; the markdown report
is appended to results/benchmarks/rl.md (--output_file; empty to skip; docs/benchmarks/rl.md is the
committed one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks._cli import RL_REPORT, add_output_file_argument, output_file_error, positive_int
from benchmarks._machine import machine_info
from soo.core.cli import CommandParser


@contextlib.contextmanager
def before_the_change():
    """The code as it was before the speed-up, patched in for the duration."""
    from soo.rl import env as env_module
    from soo.rl import maddpg, training
    from soo.rl.env import BLUE, RED

    def parallel_step(self, actions):
        obs, rew, _, _, _ = self.env.step({RED: actions[0], BLUE: actions[1]})
        return [obs[RED], obs[BLUE]], [rew[RED], rew[BLUE]], not self.env.agents

    @torch.no_grad()
    def module_act(self, obs, explore):
        actions = []
        for actor, o in zip(self.actors, obs):
            logits = actor(torch.from_numpy(o).unsqueeze(0))[0]
            if explore:
                logits = logits - torch.log(-torch.log(torch.rand_like(logits)))
            actions.append(int(torch.argmax(logits)))
        return actions

    def numpy_distance(a, b):
        return float(np.sqrt(np.sum(np.square(a - b))))

    saved = (training.Rollout.step, maddpg.MADDPG.act, env_module.distance)
    training.Rollout.step, maddpg.MADDPG.act, env_module.distance = parallel_step, module_act, numpy_distance
    try:
        yield
    finally:
        training.Rollout.step, maddpg.MADDPG.act, env_module.distance = saved


def train_both_stages(episodes: int) -> tuple[float, str]:
    """(episodes/s over both stages, fingerprint of curves + weights + a greedy evaluation)."""
    from soo.rl.config import RLExperimentConfig
    from soo.rl.env import N_ACTIONS
    from soo.rl.evaluation import evaluate
    from soo.rl.maddpg import MADDPG
    from soo.rl.training import observation_dims, train

    config = RLExperimentConfig()
    digest = hashlib.sha256()
    seconds = 0.0
    for mode in ("honest", "deceptive"):
        env_config = replace(config.env, reward_mode=mode)
        torch.manual_seed(0)
        agent = MADDPG(observation_dims(env_config), N_ACTIONS, config.maddpg)
        started = time.perf_counter()
        curve = train(agent, env_config, episodes, 0, progress=False)
        seconds += time.perf_counter() - started
        digest.update(json.dumps(curve, sort_keys=True).encode())
        for network in agent.actors + agent.critics:
            for tensor in network.state_dict().values():
                digest.update(tensor.numpy().tobytes())
    played = evaluate(agent, replace(config.env, reward_mode="deceptive"), 50, 7, references={"self": agent.actors[1]})
    digest.update(
        json.dumps(played, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)).encode()
    )
    return 2 * episodes / seconds, digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m benchmarks.rl_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=positive_int, default=300, help="training episodes per stage (default 300)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds of both methods (default 3)")
    add_output_file_argument(parser, RL_REPORT)
    args = parser.parse_args(argv)
    if output_file_error(args.output_file):
        return 2
    torch.set_num_threads(1)  # as rl_deception.py

    methods = {"before": before_the_change, "after": contextlib.nullcontext}
    speeds = {name: [] for name in methods}
    fingerprints = {name: set() for name in methods}
    for round_index in range(args.repeats):
        for name, context in methods.items():
            with context():
                speed, fingerprint = train_both_stages(args.episodes)
            speeds[name].append(speed)
            fingerprints[name].add(fingerprint)
            print(f"round {round_index + 1}: {name:<6} {speed:6.1f} episodes/s  {fingerprint[:16]}", flush=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    same = fingerprints["before"] == fingerprints["after"] and len(fingerprints["after"]) == 1
    info = machine_info()
    lines = [
        f"### MADDPG training speed ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python -m benchmarks.rl_speed --episodes {args.episodes} --repeats {args.repeats}`; "
        f"{info['cpu']}, {info['cpu_count']} cores, torch {info['torch']}, 1 thread.",
        "",
        "| method | episodes/s (median) | rounds | fingerprint |",
        "|---|---|---|---|",
    ]
    for name in methods:
        lines.append(
            f"| {name} | {medians[name]:.1f} | {', '.join(f'{v:.1f}' for v in speeds[name])} | "
            f"{', '.join(sorted(f[:16] for f in fingerprints[name]))} |"
        )
    lines += [
        "",
        f"Speed-up after/before: **{medians['after'] / medians['before']:.2f}x**; numbers "
        + ("**identical** (equal fingerprints)." if same else "**DIFFER** (fingerprints not equal)."),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.output_file:
        with open(args.output_file, "a", encoding="utf-8") as handle:
            handle.write(report + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
