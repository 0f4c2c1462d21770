"""The GPU check's parts; `python -m benchmarks.gpu_check` (benchmarks/gpu_check.py) is its command
line and runs the sections these modules define, by name, from its registry.

  context     what every section is handed: flags, device, the report, the peaks measured so far
  device      GPU probes: synchronise, free memory, datasheet and measured bf16 peaks, versions
  models      the models checked: bundled real configs (or tiny stand-ins), random weights, pairs
  training    the training and qlora sections: SOO LoRA steps timed, FLOPs counted, memory, fp16 guard
  sections    the environment, generation, scoring and evaluate sections
"""
