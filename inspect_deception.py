"""The deception scenarios as an Inspect task: run evaluate.py's prompts and classifier on any
model Inspect can reach (local Hugging Face models, vLLM, API models), with Inspect's logs and
viewer. Needs the evaluation extras: pip install -r requirements-eval.txt (scripts/setup_env.sh
installs them). The task lives in soo/eval/inspect_task.py; docs/guides/evaluation.md#inspect.

  # a local model (a directory, or a hub id fetched beforehand), greedy as evaluate.py:
  inspect eval inspect_deception.py --model hf/PATH -M do_sample=false -M device=cpu -T n=50
  # an API model, two scenarios, the paper's Mistral suffix:
  inspect eval inspect_deception.py --model openai/gpt-4o -T scenarios=main,perspectives -T suffix=mistral
  inspect view                                                     # the logs in a browser

Task arguments (-T): scenarios (comma-separated; default all 13), n (instances per scenario and
room order; default 50), seed (0), suffix (gemma, mistral, ... or the text; default the room-name
one), max_tokens (24).
"""

from inspect_ai import Task, task

from soo.eval.inspect_task import deception_task


@task
def soo_deception(
    scenarios: str | None = None, n: int = 50, seed: int = 0, suffix: str | None = None, max_tokens: int = 24
) -> Task:
    return deception_task(scenarios=scenarios, n=n, seed=seed, suffix=suffix, max_tokens=max_tokens)
