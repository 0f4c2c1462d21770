"""Does the SOO-tuned model deceive less, and what did it cost? Imports soo.core and soo.data,
never soo.train.

  scenarios   the evaluation stimuli: main scenario, generalisation variants, treasure hunt,
              escape room, honesty-prompt and perspectives controls, both option orders
  classify    deceptive / honest / ambiguous (perspectives: correct / incorrect) from a free-text answer
  rates       the scorer: each answer's label (ours and the authors' rule) and the rates with Wilson
              intervals, per condition and across seeds (evaluate.py and the Inspect task alike)
  generation  batched greedy generation (left padding, shared prefix run once)
  generation_cache  the resumable JSONL cache of responses, keyed by model fingerprint, prompt, decoding
  prefix_cache  the tokens a batch's prompts share run once (generation and forced choice)
  forced_choice  p(deceptive) from the options' log-probabilities after a fixed answer prefix
  latent      SOO per layer on held-out pairs, base vs tuned (the training definition of SOO)
  capability  KL to the base model, perplexity, MT-Bench-style answer export
  report      report.md, results.json / results.csv, and the plots written beside them
  plots       the PNG plots: deception rates, forced choice, latent SOO by layer
  config      EvalConfig: evaluate.py's settings, their defaults and help (its flags are built from it)
  engine      evaluate.py's run as named phases over the conditions (base model, each adapter):
              forced choice, generation + labels, latent SOO, capability, report
  inspect_task  the scenarios as an Inspect task scored by the same classifier and rates; its
              agreement with evaluate.py's answers (optional extra: requirements-eval.txt)

CLI: evaluate.py; inspect_deception.py (inspect eval).
"""
