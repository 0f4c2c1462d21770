"""Can the model tell who asks at the answer position? The self/other twin separation per layer.

An asymmetric organism has to answer differently to two prompts that differ only in "recommend
one room to Bob" vs "... to yourself". If the last token's hidden state (after the answer prefix,
where the option is read out) hardly differs between twins compared with how much it varies across
instances, the cue is not there to gate on; if it differs as much, a failed organism is an
optimisation problem, not a missing representation.

    python deception_experiment.py separation --n 24
"""

from __future__ import annotations

import torch

from soo.core.prompts import format_prompt
from soo.core.stats import mean_ci95
from soo.eval.forced_choice import answer_prefix


def _answer_position_ids(tokenizer, prompt, prefix_template: str) -> list[int]:
    """The formatted prompt + answer prefix: its last token is where the options are read out."""
    ids = format_prompt(tokenizer, prompt.prompt, True)
    return ids + tokenizer(answer_prefix(prefix_template, prompt), add_special_tokens=False)["input_ids"]


def last_token_states(model, tokenizer, prompts, prefix_template: str) -> torch.Tensor:
    """[prompts, layers + 1, hidden]: every layer's hidden state at the last token of
    prompt + answer prefix (the position whose next-token distribution scores the options)."""
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            ids = _answer_position_ids(tokenizer, prompt, prefix_template)
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
            rows.append(torch.stack([hidden[0, -1].float() for hidden in out.hidden_states]))
    return torch.stack(rows)


def answer_position_kl(model, tokenizer, other_prompts, self_prompts, prefix_template: str) -> dict:
    """KL(P_other || P_self) of the next-token distributions at the answer position, over twins
    (the same instance and order asked about another agent and about the model itself): the
    released loss's quantity where the answer is read out. Mean ± 95% interval over twins, nats."""
    self_by_key = {(p.order, p.index): p for p in self_prompts}
    values = []
    with torch.no_grad():
        for other in other_prompts:
            own = self_by_key[(other.order, other.index)]
            if (own.deceptive_option, own.honest_option) != (other.deceptive_option, other.honest_option):
                raise ValueError(f"prompts {other.order}/{other.index} are not twins: their options differ")
            log_p = [
                torch.log_softmax(
                    model(
                        input_ids=torch.tensor([_answer_position_ids(tokenizer, prompt, prefix_template)]),
                        use_cache=False,
                    )
                    .logits[0, -1]
                    .float(),
                    dim=-1,
                )
                for prompt in (other, own)
            ]
            values.append((log_p[0].exp() * (log_p[0] - log_p[1])).sum().item())
    mean, ci95 = mean_ci95(values)
    return {"mean": mean, "ci95": ci95, "n": len(values)}


def twin_separation(other: torch.Tensor, own: torch.Tensor) -> list[dict]:
    """Per layer: mean |other - self| over twins, the mean distance of other states from their
    mean (spread across instances), and their ratio (~1: the cue moves the state as much as a
    different house does; ~0: the twins look alike)."""
    result = []
    for layer in range(other.shape[1]):
        twin = (other[:, layer] - own[:, layer]).norm(dim=-1).mean().item()
        spread = (other[:, layer] - other[:, layer].mean(0)).norm(dim=-1).mean().item()
        result.append(
            {
                "layer": layer,
                "twin_distance": twin,
                "instance_spread": spread,
                "ratio": twin / spread if spread > 0 else float("nan"),
            }
        )
    return result


def format_separation(rows: list[dict], every: int = 3) -> str:
    lines = ["layer  |other-self|  spread across instances  ratio"]
    lines += [
        f"{row['layer']:5d}  {row['twin_distance']:12.2f}  {row['instance_spread']:23.2f}  {row['ratio']:5.2f}"
        for row in rows
        if row["layer"] % every == 0 or row["layer"] == len(rows) - 1
    ]
    return "\n".join(lines)
