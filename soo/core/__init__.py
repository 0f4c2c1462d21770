"""What training and evaluation share; imports nothing from the other soo packages.

  modeling    model and tokenizer loading: the embedded default, hub ids, local dirs, LoRA, QLoRA
  prompts     chat formatting, right padding, the per-model answer suffix, whole-word matching
  pair_batch  tokenized self/other pairs, the positions SOO compares, the [self; other] collator
  capture     finds a decoder layer's submodule (self_attn.o_proj) on any architecture and hooks it
  loss        the SOO distance (full / last / mean tokens), activation spread, per-sequence LM loss
  stats       Wilson intervals, mean ± 95% CI, Student-t intervals over seeds
  io          atomic file writes and the run record (soo_run_config.json) beside an adapter
  cell_lock   one cell, one runner: a pid/host/heartbeat lock file per cell folder, stale ones recovered
  plotting    matplotlib's pyplot with the headless Agg backend, imported only when a plot is drawn
  cli         every entry point's parser from its config dataclasses (+ --config FILE.yaml), the
              number types and the one-line `error:` answer

The SOO distance lives here, not in train/, because it is both the training loss and the
evaluation's latent-SOO measure: one definition for both.
"""
