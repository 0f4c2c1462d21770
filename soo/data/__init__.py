"""Self/other prompt pairs, the training data of SOO fine-tuning. Imports soo.core only.

  templates        vocabulary (train/test name and item pools, rooms) and the prompt families' templates
  pair_generation  what a pair is, pair generation (and the paper's released set), the self/other
                   invariant check, the per-family summary table
  pair_io          validated JSONL reading, pairs as a datasets.Dataset (file, dataset folder, hub id)
                   and the dataset card

CLI: generate_data.py.
"""
