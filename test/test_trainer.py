"""SOOTrainer: gradients reach LoRA, SOO-only training works, accumulation is exact, guards fire."""

from __future__ import annotations

import re

import pytest
import torch

from soo.core.modeling import add_lora
from soo.core.pair_batch import SOOPairCollator, SOOPairDataset
from soo.train.config import SOOConfig
from soo.train.trainer import NonFiniteLossError, SOOTrainer

SOO_LAYER = 2  # of the tiny models' 4


def soo_settings(**overrides) -> dict:
    values = dict(
        lm_weight=1.0, soo_weight=1.0, soo_layers=[SOO_LAYER], soo_module="self_attn.o_proj", soo_token_mode="full"
    )
    values.update(overrides)
    return values


def make_trainer(model, tokenizer, records, tmp_path, soo=None, eval_records=None, **training_overrides):
    training = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-2,
        max_steps=1,
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
        lr_scheduler_type="constant",
    )
    training.update(training_overrides)
    config = SOOConfig(**training, **(soo or soo_settings()))
    return SOOTrainer(
        model=model,
        args=config,
        train_dataset=SOOPairDataset(records, tokenizer),
        eval_dataset=SOOPairDataset(eval_records, tokenizer) if eval_records else None,
        data_collator=SOOPairCollator(tokenizer.pad_token_id, token_mode=config.soo_token_mode),
    )


def _layer_of(name: str) -> int:
    return int(re.search(r"layers\.(\d+)\.", name).group(1))


@pytest.mark.parametrize("mode", ["full", "last", "mean"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-ckpt"])
def test_soo_term_alone_reaches_every_lora_parameter_up_to_its_layer(
    mode, checkpointing, make_model, tokenizer, train_records, tmp_path
):
    model = make_model("llama")
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # Random A and B (peft's default zero B would leave A's gradient at exactly zero).
    model = add_lora(
        model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    trainer = make_trainer(
        model, tokenizer, train_records[:4], tmp_path, soo=soo_settings(lm_weight=0.0, soo_token_mode=mode)
    )
    model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.compute_loss(model, batch).backward()

    lora = {name: p for name, p in model.named_parameters() if "lora_" in name}
    assert lora and all(p.requires_grad for p in lora.values())
    for name, parameter in lora.items():
        layer = _layer_of(name)
        # o_proj's LoRA feeds the hooked output only at the SOO layer itself.
        reaches = layer < SOO_LAYER or (layer == SOO_LAYER)
        if reaches:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None or parameter.grad.abs().sum() == 0, name


def test_soo_only_training_halves_heldout_soo(make_model, tokenizer, train_records, test_records, tmp_path):
    model = add_lora(make_model("llama"), r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainer = make_trainer(
        model,
        tokenizer,
        train_records,
        tmp_path,
        soo=soo_settings(lm_weight=0.0),
        eval_records=test_records,
        max_steps=30,
        learning_rate=2e-2,
    )
    before = trainer.evaluate(metric_key_prefix="before")["before_soo_loss"]
    trainer.train()
    after = trainer.evaluate(metric_key_prefix="after")["after_soo_loss"]
    assert after <= 0.5 * before, (before, after)
    logged = [entry for entry in trainer.state.log_history if "soo_loss" in entry]
    assert len(logged) == 30 and all("lm_loss" not in entry for entry in logged)


def test_lm_and_soo_losses_are_logged_separately(make_model, tokenizer, train_records, tmp_path):
    model = add_lora(make_model("qwen2"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainer = make_trainer(
        model, tokenizer, train_records[:16], tmp_path, soo=soo_settings(lm_weight=0.5, soo_weight=2.0), max_steps=2
    )
    trainer.train()
    entry = trainer.state.log_history[0]
    assert {"loss", "lm_loss", "soo_loss"} <= set(entry)
    # The logged total is the weighted sum of the two logged terms.
    assert entry["loss"] == pytest.approx(0.5 * entry["lm_loss"] + 2.0 * entry["soo_loss"], rel=1e-4)


def _random_lora_gemma2(make_model):
    torch.manual_seed(1)  # random LoRA init draws from the global generator
    return add_lora(
        make_model("gemma2"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )


def _one_sgd_step(make_model, tokenizer, records, tmp_path, batch_size, accumulation):
    model = _random_lora_gemma2(make_model)
    trainer = make_trainer(
        model,
        tokenizer,
        records,
        tmp_path / f"b{batch_size}",
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=0.0,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
    )
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}, trainer


def test_gradient_accumulation_2x2_matches_batch_of_4(make_model, tokenizer, train_records, tmp_path):
    # Four pairs of different lengths: a token-weighted LM loss would break the equality.
    records = train_records[:4]
    assert len({len(r["self_prompt"]) for r in records}) > 1
    initial = {
        name: p.detach().clone() for name, p in _random_lora_gemma2(make_model).named_parameters() if "lora_" in name
    }
    whole, whole_trainer = _one_sgd_step(make_model, tokenizer, records, tmp_path, batch_size=4, accumulation=1)
    accumulated, accumulated_trainer = _one_sgd_step(
        make_model, tokenizer, records, tmp_path, batch_size=2, accumulation=2
    )
    moved = sum((whole[name] - initial[name]).abs().sum().item() for name in whole)
    assert moved > 0
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert accumulated_trainer.state.log_history[0]["loss"] == pytest.approx(
        whole_trainer.state.log_history[0]["loss"], rel=1e-5
    )


def test_non_finite_loss_stops_with_step_and_advice(make_model, tokenizer, train_records, tmp_path):
    model = make_model("gemma3")
    model.model.layers[0].mlp.register_forward_hook(lambda module, args, output: output * float("inf"))
    model = add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainer = make_trainer(model, tokenizer, train_records[:8], tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"step 1 .*bf16"):
        trainer.train()


def test_reentrant_checkpointing_is_refused_because_soo_would_get_no_gradient(
    make_model, tokenizer, train_records, tmp_path
):
    model = add_lora(make_model("llama"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainer = make_trainer(
        model,
        tokenizer,
        train_records[:8],
        tmp_path,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True},
    )
    with pytest.raises(RuntimeError, match="use_reentrant"):
        trainer.train()
