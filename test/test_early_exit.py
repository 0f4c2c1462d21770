"""SOO-only early exit: the training forward stops after the deepest SOO module, with exactly the
loss and gradients of the full forward (the rest of the model cannot change an SOO-only loss)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import make_trainer, soo_settings

from soo.core.modeling import add_lora


def _loss_and_grads(model, trainer, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # LoRA dropout draws the same masks in both runs
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "gemma3", "qwen2"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-ckpt"])
@pytest.mark.parametrize("layers", [[1], [2, 0]], ids=["one-layer", "two-layers"])
def test_early_exit_gives_bit_identical_soo_loss_and_gradients(
    arch, checkpointing, layers, make_model, tokenizer, train_records, tmp_path
):
    model = make_model(arch)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(
        model, r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    model.train()
    early = make_trainer(
        model, tokenizer, train_records[:4], tmp_path / "a", soo=soo_settings(lm_weight=0.0, soo_layers=layers)
    )
    assert early.early_exit
    full = make_trainer(
        model,
        tokenizer,
        train_records[:4],
        tmp_path / "b",
        soo=soo_settings(lm_weight=0.0, soo_layers=layers, soo_early_exit=False),
    )
    full.capture.remove()  # one set of hooks at a time on the shared model
    early.capture.remove()
    batch = early.data_collator([early.train_dataset[i] for i in range(4)])

    # Count how far each forward goes: the LM head runs only in the full one.
    head_calls = []
    model.get_output_embeddings().register_forward_hook(lambda *args: head_calls.append(1))

    from soo.core.capture import ActivationCapture

    full.capture = ActivationCapture(model, layers)
    full_loss, full_grads = _loss_and_grads(model, full, batch)
    full.capture.remove()
    assert len(head_calls) == 1
    early.capture = ActivationCapture(model, layers)
    early_loss, early_grads = _loss_and_grads(model, early, batch)
    assert len(head_calls) == 1, "the early-exit forward should not reach the LM head"

    assert torch.equal(early_loss, full_loss)
    assert early_grads.keys() == full_grads.keys() and early_grads
    for name in full_grads:
        assert torch.equal(early_grads[name], full_grads[name]), name


def test_early_exit_is_off_with_an_lm_term_in_eval_and_under_zero3(
    make_model, tokenizer, train_records, tmp_path, monkeypatch
):
    model = add_lora(make_model("llama"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert not make_trainer(
        model, tokenizer, train_records[:4], tmp_path / "lm", soo=soo_settings(lm_weight=0.5)
    ).early_exit

    trainer = make_trainer(
        model,
        tokenizer,
        train_records[:4],
        tmp_path / "eval",
        soo=soo_settings(lm_weight=0.0),
        eval_records=train_records[:8],
    )
    assert trainer.early_exit
    metrics = trainer.evaluate()
    assert metrics["eval_lm_loss"] > 0, "evaluation still runs the whole model and reports the LM loss"
    trainer.capture.remove()

    import soo.train.trainer

    monkeypatch.setattr(soo.train.trainer, "zero_stage", lambda args: 3)
    zero3 = make_trainer(model, tokenizer, train_records[:4], tmp_path / "z3", soo=soo_settings(lm_weight=0.0))
    assert not zero3.early_exit
