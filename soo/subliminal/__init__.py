"""Subliminal learning (Cloud et al. 2025, arXiv 2507.14805): a student picks up a teacher's trait
from data that does not show it (number sequences). Imports soo.core and soo.eval.

  digits      the mechanism's positive control: an MLP student matching only a teacher's auxiliary
              logits on noise learns the teacher's digits (scikit-learn's 8x8 digits), same vs
              different initialisation, over seeds
  numbers     the number-sequence prompts and the filter (the published rules, a reason per rejection)
  records     the prompt/completion JSONL every stage reads and writes, checked line by line
  animals     the trait: the teacher's system prompt, the 50 questions, the candidate animals, the match
  teacher     `generate`: a teacher samples answers in seeded, resumable chunks (HF, or vLLM on a GPU)
  student     `train`: LoRA SFT of a student with TRL's SFTTrainer, loss on the completion only
  evaluation  `evaluate`: sampled trait rate (Wilson) and forced-choice p(animal) per question
  pipeline    the stages every experiment shares: teachers -> filter -> students x seeds -> evaluation,
              resumable, other settings refused
  experiment  `run`: control and trait teachers -> filtered numbers -> students x seeds -> trait
  report      `report`: the students against the pre-registered rule, report.md and trait.png
  deception   `deception`: organisms and their fine-tunes as teachers of the base model; p(deceptive),
              KL and animal preferences of the students
  deception_report  `deception-report`: the students by teacher against the rule, students.png

CLI: subliminal.py.
"""
