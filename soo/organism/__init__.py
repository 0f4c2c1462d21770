"""Deceptive model organisms and the SOO experiment on them: can SOO remove a deception that we
know is there, beyond what the controls do? Imports soo.core, soo.data, soo.train and soo.eval.

  sft         LoRA SFT into a known deceiver (asymmetric: deceives others, not itself; symmetric;
              honest = the positive control), checked by the forced-choice score on test prompts

CLI: deception_experiment.py.
"""
