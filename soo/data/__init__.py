"""Self/other prompt pairs, the training data of SOO fine-tuning. Imports soo.core only.

  templates  vocabulary (train/test name and item pools, rooms) and the prompt families' templates
  pairs      pair generation, the self/other invariant check, validated JSONL reading

CLI: generate_data.py.
"""
