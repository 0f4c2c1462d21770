"""SOO in reinforcement learning: the physical deception task (paper section 4.1). Imports soo.core only.

  env         the 1-vs-1, two-landmark deception scenario on mpe2, deceptive/honest rewards,
              a visibility radius, the critique's hidden-hazard variant, the ours/paper presets
  maddpg      a small MADDPG (actors, centralised critics, replay buffer, Gumbel-softmax)
  overlap     what "self" and "other" are for SOO on blue's policy (definitions authors, masked)
  experiment  pretraining (frozen-red / co-trained protocols), SOO fine-tuning and controls,
              behaviour metrics, the SOO classifier
  report      markdown table and PNG plots over seeds

CLI: rl_deception.py; Slurm: submit_rl_deception.sh.
"""
