"""The SOO distance between self and other activations, and the LM term beside it.

Both prompts of a pair go through one forward pass as rows `i` (self) and `B + i` (other) of
the concatenated batch. Which token positions are compared is decided by the collator
(`soo.core.pair_batch.SOOPairCollator`) and handed over as indices, so this module never sees padding:

  full  token-by-token over the aligned prompts: `align_pair[k]` compares position
        `align_self_pos[k]` of self row with `align_other_pos[k]` of other row;
  last  the same index form with one entry per pair: each prompt's last real token;
  mean  masked mean over each prompt's compared span `[span_start, length)`, then MSE.

Per pair the distance is a mean of squared differences (over hidden units, and over aligned
positions for `full`); the loss is the mean over pairs and over SOO layers. Weighting every
pair equally, whatever its length, makes the loss of a batch of 4 the exact mean of two
batches of 2, so gradient accumulation needs no token counts. Computed in fp32: Gemma-2/3
activations overflow in fp16.

The authors' released code trains a different distance (`kl_logits`, reference section 9):
KL(P_other || P_self) between the two prompts' OUTPUT next-token distributions, summed over the
compared positions and the vocabulary for each pair (their `F.kl_div(..., reduction="batchmean")`
is exactly this per-pair sum, averaged over pairs). Which positions: `released` compares every
position by index of prompts padded to one fixed length, pad positions included, as their code
did; `aligned` compares the positions of the token mode above (full, last), never padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TOKEN_MODES = ("full", "last", "mean")
SOO_DISTANCES = ("mse", "kl_logits")  # the paper's text; the authors' released code
KL_POSITIONS = ("aligned", "released")


def _compared_vectors(activations: torch.Tensor, batch: dict, token_mode: str):
    """(self vectors, other vectors, pair index of each row) at the compared positions, fp32."""
    num_pairs = activations.shape[0] // 2
    acts = activations.float()
    if token_mode in ("full", "last"):
        pair = batch["align_pair"]
        return acts[pair, batch["align_self_pos"]], acts[pair + num_pairs, batch["align_other_pos"]], pair
    if token_mode == "mean":
        mask = batch["span_mask"].to(acts.dtype).unsqueeze(-1)  # [2B, T, 1]: compared span only
        means = (acts * mask).sum(dim=1) / mask.sum(dim=1)
        return means[:num_pairs], means[num_pairs:], torch.arange(num_pairs, device=acts.device)
    raise ValueError(f"Unknown SOO token mode '{token_mode}'; choose one of {', '.join(TOKEN_MODES)}.")


def _mean_per_pair(values: torch.Tensor, pair: torch.Tensor, num_pairs: int) -> torch.Tensor:
    totals = torch.zeros(num_pairs, dtype=values.dtype, device=values.device).index_add_(0, pair, values)
    return totals / torch.bincount(pair, minlength=num_pairs).to(values.dtype)


def soo_distance_per_pair(activations: torch.Tensor, batch: dict, token_mode: str) -> torch.Tensor:
    """Distance between self and other activations for each pair, shape [num_pairs], fp32.

    `activations` is [2 * num_pairs, seq_len, hidden] from the concatenated [self; other] batch.
    """
    self_vectors, other_vectors, pair = _compared_vectors(activations, batch, token_mode)
    return _mean_per_pair((self_vectors - other_vectors).pow(2).mean(dim=-1), pair, activations.shape[0] // 2)


def activation_spread_per_pair(activations: torch.Tensor, batch: dict, token_mode: str) -> torch.Tensor:
    """Variance of the compared activations around their batch mean, per pair (fp32).

    The scale against which an SOO distance is read. MSE between self and other can fall because
    the two converge, or because the hooked output stops depending on the input at all (a
    constant vector for every prompt has zero SOO). The second shows as a collapsing spread; the
    mean square would hide it behind the constant. SOO / spread is scale-free: about 2 means
    self is no closer to its own other than to any activation in the batch. Needs batches of
    several pairs (with one pair in `last` mode it is SOO / 4 by construction).
    """
    self_vectors, other_vectors, pair = _compared_vectors(activations, batch, token_mode)
    center = torch.cat([self_vectors, other_vectors]).mean(dim=0)
    spread = ((self_vectors - center).pow(2).mean(dim=-1) + (other_vectors - center).pow(2).mean(dim=-1)) / 2
    return _mean_per_pair(spread, pair, activations.shape[0] // 2)


def kl_logits_per_pair(logits: torch.Tensor, batch: dict, positions: str) -> torch.Tensor:
    """KL(P_other || P_self) of the next-token distributions, summed over the compared positions
    and the vocabulary, per pair: shape [num_pairs], fp32.

    `logits` is [2 * num_pairs, seq_len, vocab] from the [self; other] batch. Both sides carry
    gradients, as in the released code (the target distribution is not detached).
    """
    num_pairs = logits.shape[0] // 2
    if positions == "released":  # position t of self against position t of other, pads included
        self_logits, other_logits = logits[:num_pairs], logits[num_pairs:]
        pair = None
    elif positions == "aligned":
        if "align_pair" not in batch:
            raise ValueError("kl_logits with aligned positions needs token mode full or last (not mean).")
        pair = batch["align_pair"]
        self_logits = logits[pair, batch["align_self_pos"]]
        other_logits = logits[pair + num_pairs, batch["align_other_pos"]]
    else:
        raise ValueError(f"Unknown KL positions '{positions}'; choose one of {', '.join(KL_POSITIONS)}.")
    self_log_p = F.log_softmax(self_logits.float(), dim=-1)
    other_log_p = F.log_softmax(other_logits.float(), dim=-1)
    per_position = (other_log_p.exp() * (other_log_p - self_log_p)).sum(dim=-1)
    if pair is None:
        return per_position.sum(dim=-1)
    return torch.zeros(num_pairs, dtype=per_position.dtype, device=per_position.device).index_add_(
        0, pair, per_position
    )


def soo_loss(layer_activations: Sequence[torch.Tensor], batch: dict, token_mode: str) -> torch.Tensor:
    """Mean SOO distance over pairs and over the SOO layers (a scalar, fp32)."""
    per_layer = [soo_distance_per_pair(acts, batch, token_mode).mean() for acts in layer_activations]
    return torch.stack(per_layer).mean()


def lm_loss_per_sequence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged within each sequence, shape [batch], fp32.

    Labels are -100 on padding. A per-sequence mean (then a mean over sequences) keeps every
    prompt's weight independent of how the batch was split for gradient accumulation.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(shift_labels.shape)
    valid = (shift_labels != -100).to(token_loss.dtype)
    return (token_loss * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
