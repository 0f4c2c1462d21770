"""What benchmarks.generation measures, also used by benchmarks.scoring and the GPU check: the
prompts (blocks of neighbours, as the evaluation batches them), a token counter around
model.generate, the ways of batching, one timed pass of a method, and the agreement of outputs.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field

from benchmarks._machine import cpu_snapshot, others_cpu_share
from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time


def neighbour_blocks(keys: list, count: int, block: int) -> list[int]:
    """Indices of `count` items taken as evenly spaced blocks of `block` neighbours in sorted `keys`
    order (how the evaluation batches a protocol's prompts), so the sample batches as densely as
    the whole set; all indices, sorted, when `count` covers them."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    blocks = [order[start : start + block] for start in range(0, len(order), block)]
    wanted = -(-count // block)
    if wanted >= len(blocks):
        return order
    return [index for k in range(wanted) for index in blocks[k * len(blocks) // wanted]][:count]


def build_prompts(
    n: int, answer_suffix: str | None, pool_n: int = 0, block: int = 1, tokenizer=None
) -> tuple[list[str], str]:
    """N prompts of the main scenario and a line saying where they came from: the first n, or
    (pool_n > 0) blocks of `block` neighbours in token order from the pool_n-instance protocol."""
    from soo.core.prompts import DEFAULT_ANSWER_SUFFIX
    from soo.eval.generation import format_generation_prompt
    from soo.eval.scenarios import build_eval_prompts

    suffix = answer_suffix or DEFAULT_ANSWER_SUFFIX
    if pool_n:
        pool = [prompt.prompt for prompt in build_eval_prompts(["main"], n=pool_n, seed=0, answer_suffix=suffix)]
        keys = [format_generation_prompt(tokenizer, prompt, DecodingConfig()) for prompt in pool]
        picked = neighbour_blocks(keys, n, block)
        return [pool[index] for index in picked], (
            f"{len(picked) // block} evenly spaced blocks of {block} neighbours (token order, as evaluate.py batches) "
            f"from soo.eval.scenarios.build_eval_prompts(['main'], n={pool_n}, seed=0, answer_suffix={suffix!r})"
        )
    # build_eval_prompts gives each instance in both room orders: ceil(n/2) instances, first n prompts.
    prompts = build_eval_prompts(["main"], n=(n + 1) // 2, seed=0, answer_suffix=suffix)[:n]
    return [prompt.prompt for prompt in prompts], (
        f"soo.eval.scenarios.build_eval_prompts(['main'], n={(n + 1) // 2}, seed=0, answer_suffix={suffix!r})[:{n}]"
    )


class TokenCounter:
    """Wraps model.generate to count prompt tokens (with padding) and generated tokens (up to and
    including each row's first EOS; the rest of a finished row is padding)."""

    def __init__(self, model, eos_ids: set[int]):
        self.model = model
        self.original = model.generate
        self.eos_ids = eos_ids
        self.reset()

    def reset(self):
        self.prompt_tokens = self.padded_prompt_tokens = self.new_tokens = 0

    def __call__(self, *args, **kwargs):
        output = self.original(*args, **kwargs)
        input_ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        self.prompt_tokens += int(mask.sum())
        self.padded_prompt_tokens += input_ids.numel()
        for row in output[:, input_ids.shape[1] :].tolist():
            stop = next((position + 1 for position, token in enumerate(row) if token in self.eos_ids), len(row))
            self.new_tokens += stop
        return output

    def __enter__(self):
        self.model.generate = self
        return self

    def __exit__(self, *exc):
        del self.model.generate  # back to the class's method
        return False


# (name, share_prefix, group_prefixes): before, the first change, the second change.
BATCHINGS = (("whole prompts", False, False), ("shared prefix", True, False), ("shared prefix + groups", True, True))


@dataclass
class Method:
    name: str
    batch_size: int | None  # None: one at a time
    share_prefix: bool = False
    group_prefixes: bool = False
    seconds: list[float] = field(default_factory=list)
    others_cpu: list[float] = field(default_factory=list)  # share of the machine used by anything else
    new_tokens: int = 0
    prompt_tokens: int = 0
    padded_prompt_tokens: int = 0
    outputs: list[list[str]] = field(default_factory=list)


def run_method(method: Method, model, tokenizer, prompts, max_new_tokens, counter: TokenCounter, progress: bool):
    decoding = DecodingConfig(max_new_tokens=max_new_tokens, batch_size=method.batch_size or 1)
    counter.reset()
    before = cpu_snapshot()
    start = time.perf_counter()
    if method.batch_size is None:
        outputs = generate_one_at_a_time(model, tokenizer, prompts, decoding, progress=progress)
    else:
        outputs = generate_batched(
            model,
            tokenizer,
            prompts,
            decoding,
            progress=progress,
            share_prefix=method.share_prefix,
            group_prefixes=method.group_prefixes,
        )
    method.seconds.append(time.perf_counter() - start)
    method.others_cpu.append(others_cpu_share(before, cpu_snapshot()))
    method.outputs.append(outputs)
    method.new_tokens, method.prompt_tokens = counter.new_tokens, counter.prompt_tokens
    method.padded_prompt_tokens = counter.padded_prompt_tokens
    print(
        f"  {method.name}: {method.seconds[-1]:.1f} s (other processes used {100 * method.others_cpu[-1]:.0f}% "
        "of the CPUs meanwhile)",
        file=sys.stderr,
        flush=True,
    )


def flops_per_token(model) -> int:
    """~2 x the parameters a token's forward multiplies by (all but the embedding lookup; the LM
    head runs on the last position only, so it is left out too; attention scores are a few %)."""
    skip = {
        id(module.weight)
        for module in (model.get_input_embeddings(), model.get_output_embeddings())
        if module is not None
    }
    return 2 * sum(parameter.numel() for parameter in model.parameters() if id(parameter) not in skip)


def agreement(reference: list[str], outputs: list[str]) -> tuple[int, list[int]]:
    differing = [index for index, (a, b) in enumerate(zip(reference, outputs)) if a != b]
    return len(reference) - len(differing), differing


def fmt_range(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"
