"""SOO in reinforcement learning: the physical deception task (paper section 4.1). Imports soo.core only.

  env            the 1-vs-1, two-landmark deception scenario on mpe2, deceptive/honest rewards,
                 a visibility radius, the critique's hidden-hazard variant, the ours/paper presets
  maddpg         a small MADDPG (actors, centralised critics, replay buffer, Gumbel-softmax)
  overlap        what "self" and "other" are for SOO on blue's policy (definitions authors, masked)
  config         the conditions, the training protocols (frozen-red / co-trained), RLExperimentConfig
  finetune_loss  the fine-tuning terms: SOO, its random-target control, the action MSE
  training       the MADDPG training loop (rollouts, replay) with one learning-curve row per episode
  evaluation     greedy play: behaviour metrics, agreement with the baselines, SOO per episode
  classifier     the SOO classifier's statistics over (deceptive, honest) policy pairs
  stages         one seed's training stages: each trained and saved, or reused; where each lives
  seed           one seed end to end: its stages, their evaluation under each definition, results written
  plots          the report's PNG plots
  report         report.md, summary.json and the classifier report over seeds

CLI: rl_deception.py; Slurm: submit_rl_deception.sh.
"""
