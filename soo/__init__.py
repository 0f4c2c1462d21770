"""Self-Other Overlap (SOO) fine-tuning of language models.

Modules, one concern each:
  scenarios   vocabulary and templates of the self/other prompt families
  pairs       pair generation and JSONL I/O
  modeling    model and tokenizer loading (embedded default, LoRA, QLoRA)
  capture     finding a decoder layer's submodule and capturing its output
  loss        the SOO distance between self and other activations
  config      argument dataclasses for finetuning.py
  trainer     dataset, collator and the SOOTrainer
  measure     held-out SOO of a model on a set of pairs
  tiny_model  tiny random-weight models with an offline tokenizer, for tests and smoke runs
"""
