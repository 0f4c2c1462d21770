"""SOO loss, token alignment and padding: what is compared, and that padding never is."""

from __future__ import annotations

import pytest
import torch

from soo.core.capture import ActivationCapture
from soo.core.loss import TOKEN_MODES, activation_spread_per_pair, lm_loss_per_sequence, soo_distance_per_pair, soo_loss
from soo.core.pair_batch import SOOPairCollator, SOOPairDataset, aligned_positions, compared_span_start


def _pad_more(batch: dict, extra: int, pad_id: int) -> dict:
    """The same batch with `extra` more padding columns on the right."""
    padded = dict(batch)
    rows = batch["input_ids"].shape[0]
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((rows, extra), pad_id)], dim=1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros((rows, extra), dtype=torch.long)], dim=1)
    padded["labels"] = torch.cat([batch["labels"], torch.full((rows, extra), -100)], dim=1)
    if "span_mask" in batch:
        padded["span_mask"] = torch.cat([batch["span_mask"], torch.zeros((rows, extra), dtype=torch.long)], dim=1)
    return padded


def _per_pair_soo(model, capture, batch, mode):
    capture.reset()
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return soo_distance_per_pair(capture.outputs[capture.layer_indices[0]], batch, mode)


@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_extra_padding_does_not_change_soo(mode, make_model, tokenizer, train_records):
    model = make_model("llama").eval()
    capture = ActivationCapture(model, layers=[2])
    dataset = SOOPairDataset(train_records[:6], tokenizer)
    collator = SOOPairCollator(pad_token_id=tokenizer.pad_token_id, token_mode=mode)

    batch = collator([dataset[i] for i in range(4)])
    reference = _per_pair_soo(model, capture, batch, mode)
    assert torch.all(reference > 0)

    # 1) More padding columns on the same batch.
    more_padding = _per_pair_soo(model, capture, _pad_more(batch, 17, tokenizer.pad_token_id), mode)
    torch.testing.assert_close(more_padding, reference, rtol=1e-5, atol=1e-7)

    # 2) The same pairs batched with a much longer pair (so they get padded further).
    long_pair = {
        "self_input_ids": dataset[4]["self_input_ids"] * 3,
        "other_input_ids": dataset[4]["other_input_ids"] * 3,
    }
    mixed = _per_pair_soo(model, capture, collator([dataset[i] for i in range(4)] + [long_pair]), mode)
    torch.testing.assert_close(mixed[:4], reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_no_compared_position_is_padding(mode, tokenizer, train_records):
    dataset = SOOPairDataset(train_records[:8], tokenizer)
    batch = SOOPairCollator(tokenizer.pad_token_id, token_mode=mode)([dataset[i] for i in range(8)])
    mask = batch["attention_mask"]
    if mode == "mean":
        assert torch.all(batch["span_mask"] <= mask) and torch.all(batch["span_mask"].sum(1) > 0)
    else:
        assert torch.all(mask[batch["align_pair"], batch["align_self_pos"]] == 1)
        assert torch.all(mask[batch["align_pair"] + 8, batch["align_other_pos"]] == 1)
    assert torch.equal(batch["labels"] == -100, mask == 0)


def test_full_alignment_skips_shared_prefix_and_pairs_equal_tokens():
    # Token ids: shared prefix [1 2 3], self referent [10] vs other [20 21], shared suffix [4 5 6].
    self_ids = [1, 2, 3, 10, 4, 5, 6]
    other_ids = [1, 2, 3, 20, 21, 4, 5, 6]
    assert compared_span_start(self_ids, other_ids) == 3
    pairs = aligned_positions(self_ids, other_ids)
    # referent replaced position-wise up to the shorter span; suffix aligned despite the shift
    assert pairs == [(3, 3), (4, 5), (5, 6), (6, 7)]
    assert all(self_ids[s] == other_ids[o] for s, o in pairs[1:])


def test_identical_prompts_have_zero_soo_in_every_mode(make_model, tokenizer, train_records):
    model = make_model("mistral").eval()
    capture = ActivationCapture(model, layers=[1])
    dataset = SOOPairDataset(train_records[:2], tokenizer)
    twins = [{"self_input_ids": f["self_input_ids"], "other_input_ids": f["self_input_ids"]} for f in dataset]
    for mode in TOKEN_MODES:
        values = _per_pair_soo(model, capture, SOOPairCollator(tokenizer.pad_token_id, mode)(twins), mode)
        assert torch.all(values == 0), mode


def test_soo_matches_a_hand_computation():
    torch.manual_seed(0)
    acts = torch.randn(4, 5, 3)  # 2 pairs: rows 0,1 self; rows 2,3 other
    full = {
        "align_pair": torch.tensor([0, 0, 1]),
        "align_self_pos": torch.tensor([1, 2, 4]),
        "align_other_pos": torch.tensor([1, 3, 0]),
    }
    expected_pair0 = ((acts[0, 1] - acts[2, 1]).pow(2).mean() + (acts[0, 2] - acts[2, 3]).pow(2).mean()) / 2
    expected_pair1 = (acts[1, 4] - acts[3, 0]).pow(2).mean()
    per_pair = soo_distance_per_pair(acts, full, "full")
    torch.testing.assert_close(per_pair, torch.stack([expected_pair0, expected_pair1]))
    torch.testing.assert_close(soo_loss([acts, 2 * acts], full, "full"), per_pair.mean() * (1 + 4) / 2)

    span = torch.zeros(4, 5, dtype=torch.long)
    span[0, 1:3] = 1
    span[2, 1:4] = 1
    span[1, 0:5] = 1
    span[3, 2:5] = 1
    mean = soo_distance_per_pair(acts, {"span_mask": span}, "mean")
    expected = (acts[0, 1:3].mean(0) - acts[2, 1:4].mean(0)).pow(2).mean()
    torch.testing.assert_close(mean[0], expected)


def test_soo_is_computed_in_fp32_even_for_half_activations():
    acts = torch.full((2, 3, 4), 300.0, dtype=torch.float16)
    acts[1] = -300.0  # (600)^2 = 360000 overflows fp16 (max 65504)
    batch = {"align_pair": torch.tensor([0]), "align_self_pos": torch.tensor([2]), "align_other_pos": torch.tensor([2])}
    value = soo_distance_per_pair(acts, batch, "last")
    assert value.dtype == torch.float32 and torch.isfinite(value).all() and value.item() == pytest.approx(360000.0)


def test_lm_loss_is_a_per_sequence_mean_ignoring_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    per_seq = lm_loss_per_sequence(logits, labels)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(per_seq[0], ce(logits[0, :2], labels[0, 1:3]))
    torch.testing.assert_close(per_seq[1], ce(logits[1, :1], labels[1, 1:2]))


def test_unknown_token_mode_is_an_error():
    with pytest.raises(ValueError, match="full, last, mean"):
        soo_distance_per_pair(torch.zeros(2, 2, 2), {}, "middle")


def test_activation_spread_ignores_constant_offsets_and_sees_collapse():
    torch.manual_seed(1)
    acts = torch.randn(4, 5, 3)  # 2 pairs
    batch = {
        "align_pair": torch.tensor([0, 0, 1]),
        "align_self_pos": torch.tensor([1, 3, 0]),
        "align_other_pos": torch.tensor([0, 2, 4]),
    }
    self_vectors, other_vectors = acts[[0, 0, 1], [1, 3, 0]], acts[[2, 2, 3], [0, 2, 4]]
    center = torch.cat([self_vectors, other_vectors]).mean(0)
    deviations = ((self_vectors - center).pow(2).mean(-1) + (other_vectors - center).pow(2).mean(-1)) / 2
    expected = torch.stack([deviations[:2].mean(), deviations[2]])
    spread = activation_spread_per_pair(acts, batch, "full")
    torch.testing.assert_close(spread, expected)
    # A constant added to every activation changes the mean square but not the spread.
    torch.testing.assert_close(activation_spread_per_pair(acts + 5.0, batch, "full"), spread)
    # The same vector everywhere (a layer that ignores its input): spread and SOO are both zero.
    constant = torch.ones(4, 5, 3)
    assert torch.all(activation_spread_per_pair(constant, batch, "full") == 0)
    # Scaling every activation scales SOO and spread alike: their ratio is scale-free.
    ratio = soo_distance_per_pair(acts, batch, "full") / spread
    torch.testing.assert_close(
        soo_distance_per_pair(acts / 3, batch, "full") / activation_spread_per_pair(acts / 3, batch, "full"), ratio
    )
