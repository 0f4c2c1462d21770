"""Deceptive model organisms and the SOO experiment on them: can SOO remove a deception that we
know is there, beyond what the controls do? Imports soo.core, soo.data, soo.train and soo.eval.

  sft          LoRA SFT into a known deceiver (asymmetric: deceives others, not itself; symmetric;
               honest = the positive control), checked by the forced-choice score on test prompts
  experiment   the conditions (soo, lm_only, soo_mismatched, honest_sft) x seeds on an organism,
               resumable, with the SOO-effect rule written down before the runs
  diagnostics  the self/other twin separation of the last token's state per layer (is the cue
               there for an asymmetric organism to gate on?)
  config       ExperimentConfig: the conditions, an experiment's settings and defaults (its flags)
  report       the rule applied: changes with Student-t intervals over seeds, tables, a plot

CLI: deception_experiment.py.
"""
