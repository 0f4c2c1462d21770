"""Self-Other Overlap (SOO) fine-tuning of language models (Carauleanu et al. 2024, arXiv 2412.16325).

Packages in pipeline order; each package's docstring is its module map. Imports point one way:
core <- data <- train, eval <- organism, sweep, tools, subliminal; rl uses core only. Evaluation never imports training.

  core   what every stage shares: model loading, prompt formatting, pair batching, the SOO
         distance and activation capture, statistics, atomic files
  data   self/other prompt pairs: templates and vocabulary, generation, JSONL reading
  train  SOOConfig, SOOTrainer, one fine-tuning run, DeepSpeed/srun set-up, preemption
  eval   deception scenarios, answer classification, generation, latent SOO, capability, report
  organism  deceptive model organisms (LoRA SFT) and the SOO experiment on them
  sweep  grids of fine-tuning settings (layers x seeds x weights, controls) as train -> evaluate cells
  tools  stand-alone commands: memory plan, adapter merge, tiny test models
  rl     SOO in the physical deception task (MADDPG)
  subliminal  subliminal learning: teacher -> number sequences -> student -> trait, and its
         mechanism's positive control

Entry points are the scripts at the repository root: generate_data.py, finetuning.py,
evaluate.py, rl_deception.py, deception_experiment.py, sweep.py, subliminal.py.
"""
