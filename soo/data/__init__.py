"""Self/other prompt pairs, the training data of SOO fine-tuning. Imports soo.core only.

  templates  vocabulary (train/test name and item pools, rooms) and the prompt families' templates
  pairs      pair generation, the self/other invariant check, validated JSONL reading, pairs as a
             datasets.Dataset (file, dataset folder, hub id) and the dataset card

CLI: generate_data.py.
"""
