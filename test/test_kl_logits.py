"""The released code's SOO distance (`--soo_distance kl_logits`) against an independent computation
of their formula: each prompt tokenized alone to a fixed length, two forwards, `F.kl_div(
log_softmax(self), softmax(other), reduction="batchmean")` (reference section 9); loss and LoRA
gradients, both padding sides; and the aligned-token variant against a per-position sum."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from soo.core.modeling import add_lora
from soo.core.pair_batch import SOOPairDataset, aligned_positions
from soo.train.config import DataArguments, SOOConfig
from soo.train.run import pair_collator
from soo.train.trainer import SOOTrainer

SOO_LAYER = 2
FIXED_LENGTH = 48  # the released code pads to 128; the tiny tokenizer's prompts are ~30 tokens


def _released_tokenizer(tokenizer, side: str):
    """The released code's tokenizer set-up: pad = EOS, its own padding side."""
    released = copy.deepcopy(tokenizer)
    released.pad_token = released.eos_token
    released.padding_side = side
    return released


def _lora_model(make_model, arch="llama"):
    torch.manual_seed(1)  # random A and B: peft's zero B would leave A's gradient at exactly zero
    return add_lora(
        make_model(arch), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )


def _trainer(model, tokenizer, records, tmp_path, positions: str, side: str = "tokenizer", **training):
    training = {"per_device_train_batch_size": len(records), "max_steps": 1, **training}
    config = SOOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        lm_weight=0.0,
        soo_weight=1.0,
        soo_layers=[SOO_LAYER],
        soo_distance="kl_logits",
        soo_kl_positions=positions,
        **training,
    )
    data = DataArguments(max_length=FIXED_LENGTH, use_chat_template=False, padding_side=side)
    dataset = SOOPairDataset(records, tokenizer, max_length=FIXED_LENGTH, use_chat_template=False)
    return SOOTrainer(
        model=model, args=config, train_dataset=dataset, data_collator=pair_collator(tokenizer, data, config)
    )


def _lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
    model.zero_grad(set_to_none=True)
    return grads


def _released_formula(model, tokenizer, records) -> torch.Tensor:
    """Their computation, written from the facts: two padded batches, two forwards, batchmean KL."""

    def encode(texts):
        return tokenizer(
            texts,
            padding="max_length",
            max_length=FIXED_LENGTH,
            truncation=True,
            return_tensors="pt",
        )

    self_batch = encode([r["self_prompt"] for r in records])
    other_batch = encode([r["other_prompt"] for r in records])
    logits_self = model(input_ids=self_batch["input_ids"], attention_mask=self_batch["attention_mask"]).logits
    logits_other = model(input_ids=other_batch["input_ids"], attention_mask=other_batch["attention_mask"]).logits
    return F.kl_div(F.log_softmax(logits_self, dim=-1), F.softmax(logits_other, dim=-1), reduction="batchmean")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_released_kl_matches_the_released_formula_loss_and_lora_gradients(
    side, arch, make_model, tokenizer, train_records, tmp_path
):
    released = _released_tokenizer(tokenizer, side)
    records = train_records[:4]
    model = _lora_model(make_model, arch)
    model.train()

    reference = _released_formula(model, released, records)
    reference.backward()
    reference_grads = _lora_grads(model)

    trainer = _trainer(model, released, records, tmp_path, "released")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
    assert batch["input_ids"].shape[1] == FIXED_LENGTH
    pads = batch["attention_mask"] == 0
    assert bool(pads[:, 0].any()) == (side == "left") and bool(pads[:, -1].any()) == (side == "right")
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = _lora_grads(model)

    assert reference.item() > 0
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-6)
    assert grads.keys() == reference_grads.keys()
    moved = sum(g.abs().sum().item() for g in reference_grads.values())
    assert moved > 0
    for name in grads:
        torch.testing.assert_close(grads[name], reference_grads[name], rtol=1e-3, atol=1e-6, msg=name)


def test_released_positions_depend_on_the_padding_side_and_count_the_pads(
    make_model, tokenizer, train_records, tmp_path
):
    """Alignment by index: the two sides give different losses, and neither is the aligned loss."""
    records = train_records[:4]
    model = _lora_model(make_model).eval()
    losses = {}
    with torch.no_grad():
        for name, positions, side in [
            ("left", "released", "left"),
            ("right", "released", "right"),
            ("aligned", "aligned", "tokenizer"),
        ]:
            trainer = _trainer(
                model, _released_tokenizer(tokenizer, "right"), records, tmp_path / name, positions, side=side
            )
            batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
            losses[name] = trainer.compute_loss(model, batch).item()
    assert losses["left"] != pytest.approx(losses["right"], rel=1e-3)
    assert losses["aligned"] < min(losses["left"], losses["right"])


def test_aligned_kl_is_the_sum_over_aligned_tokens_and_ignores_padding(make_model, tokenizer, train_records, tmp_path):
    records = train_records[:4]
    model = _lora_model(make_model).eval()
    expected = []
    with torch.no_grad():
        for record in records:  # one pair at a time, no padding anywhere
            self_ids = tokenizer(record["self_prompt"])["input_ids"]
            other_ids = tokenizer(record["other_prompt"])["input_ids"]
            positions = aligned_positions(self_ids, other_ids)
            self_logits = model(torch.tensor([self_ids])).logits[0, [s for s, _ in positions]]
            other_logits = model(torch.tensor([other_ids])).logits[0, [o for _, o in positions]]
            expected.append(
                F.kl_div(
                    F.log_softmax(self_logits, -1), F.log_softmax(other_logits, -1), reduction="sum", log_target=True
                )
            )
        trainer = _trainer(model, tokenizer, records, tmp_path, "aligned")
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
        assert (batch["attention_mask"] == 0).any(), "the batch should hold padding for this test to mean anything"
        loss = trainer.compute_loss(model, batch)
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-4, atol=1e-6)


def test_kl_logits_gradient_accumulation_2x2_matches_batch_of_4(make_model, tokenizer, train_records, tmp_path):
    records = train_records[:4]
    finals = []
    for batch_size, accumulation in [(4, 1), (2, 2)]:
        model = _lora_model(make_model)
        initial = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        trainer = _trainer(
            model,
            _released_tokenizer(tokenizer, "left"),
            records,
            tmp_path / f"b{batch_size}",
            "released",
            side="left",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
        )
        trainer.train()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
    assert sum((finals[0][n] - initial[n]).abs().sum().item() for n in initial) > 0
    for name in finals[0]:
        torch.testing.assert_close(finals[1][name], finals[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_kl_logits_never_exits_early_and_logs_its_own_metric(make_model, tokenizer, train_records, tmp_path):
    model = _lora_model(make_model)
    trainer = _trainer(
        model,
        tokenizer,
        train_records[:8],
        tmp_path,
        "aligned",
        per_device_train_batch_size=4,
        max_steps=2,
        logging_steps=1,
    )
    assert trainer.args.soo_early_exit and not trainer.early_exit
    trainer.train()
    entry = trainer.state.log_history[0]
    assert {"soo_kl_logits", "soo_latent_mse", "soo_act_spread"} <= set(entry) and "soo_loss" not in entry
    assert entry["loss"] == pytest.approx(entry["soo_kl_logits"], rel=1e-4)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--soo_distance", "cosine"], "--soo_distance must be one of mse, kl_logits"),
        (["--soo_distance", "kl_logits", "--soo_token_mode", "mean"], "use --soo_token_mode full or last"),
        (["--soo_kl_positions", "all"], "--soo_kl_positions must be one of aligned, released"),
        (["--padding_side", "middle"], "--padding_side must be one of tokenizer, left, right"),
    ],
)
def test_bad_kl_flags_are_one_line_errors(flags, message, capsys):
    import finetuning

    assert finetuning.main(["--output_dir", "/tmp/unused", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_released_config_end_to_end_on_a_tiny_model(tiny_model_dir, data_files, tmp_path):
    """The shipped released-recipe config, with only the model and length swapped, trains from the CLI."""
    import subprocess

    from test_scale import REPO_ROOT

    out = tmp_path / "run"
    command = [
        sys.executable,
        str(REPO_ROOT / "finetuning.py"),
        "--config",
        str(REPO_ROOT / "configs" / "smollm2-135m-instruct-released.yaml"),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--soo_layers",
        "2",
        "--data_path",
        str(data_files[0]),
        "--eval_data_path",
        str(data_files[1]),
        "--max_length",
        "64",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--use_cpu",
        "--disable_tqdm",
        "true",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no early exit" in result.stderr
    assert "Held-out SOO (KL(P_other || P_self)" in result.stdout
    record = json.loads((out / "soo_run_config.json").read_text())
    assert record["soo_args"]["soo_distance"] == "kl_logits" and record["soo_args"]["soo_kl_positions"] == "released"
    assert record["soo_args"]["lm_weight"] == 0
    heldout = json.loads((out / "heldout_soo.json").read_text())
    assert heldout["heldout_after"]["soo_kl_logits"] != heldout["heldout_before"]["soo_kl_logits"]
