"""Layer resolution and activation capture on every supported architecture."""

from __future__ import annotations

import pytest
import torch

from soo.core.capture import ActivationCapture, LayerResolutionError, find_decoder_layers
from soo.core.modeling import add_lora
from soo.tools.tiny_model import ARCHITECTURES, TINY_NUM_LAYERS


def _batch(tokenizer, texts=("You have the goal of stealing the vase.", "Bob has the goal of stealing the vase.")):
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "peft"])
def test_capture_finds_o_proj_on_every_architecture(arch, wrapped, make_model, tokenizer):
    model = make_model(arch)
    if wrapped:
        model = add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"])
    path, layers = find_decoder_layers(model)
    assert len(layers) == TINY_NUM_LAYERS and path.endswith("layers")

    capture = ActivationCapture(model, layers=[1, -1], module_path="self_attn.o_proj")
    assert capture.layer_indices == [1, TINY_NUM_LAYERS - 1]
    batch = _batch(tokenizer)
    with torch.no_grad():
        logits_with_hooks = model(**batch).logits
    outputs = capture.stacked()
    assert [tuple(o.shape) for o in outputs] == [(2, batch["input_ids"].shape[1], model.config.hidden_size)] * 2
    # Under peft, o_proj is the LoRA wrapper: we must hook it, not its frozen base_layer.
    if wrapped:
        assert hasattr(capture.modules[1], "lora_A") and hasattr(capture.modules[1], "base_layer")

    # The hook returns None, so the model's output is untouched by capturing.
    capture.remove()
    with torch.no_grad():
        logits_without_hooks = model(**batch).logits
    torch.testing.assert_close(logits_with_hooks, logits_without_hooks, rtol=0, atol=0)


def test_captured_output_equals_module_output(make_model, tokenizer):
    model = make_model("llama")
    capture = ActivationCapture(model, layers=[2])
    seen = {}
    model.model.layers[2].self_attn.o_proj.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.clone()))
    model(**_batch(tokenizer))
    torch.testing.assert_close(capture.outputs[2], seen["out"], rtol=0, atol=0)
    assert capture.outputs[2].requires_grad, "the capture must keep the autograd graph (no detach)"


def test_only_first_call_per_forward_is_kept_under_gradient_checkpointing(make_model, tokenizer):
    model = make_model("llama")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    capture = ActivationCapture(model, layers=[1])
    calls = []
    capture.modules[1].register_forward_hook(lambda m, a, out: calls.append(out))
    capture.reset()
    out = model(**_batch(tokenizer))
    first = capture.outputs[1]
    (out.logits.float().pow(2).mean() + first.pow(2).mean()).backward()
    assert len(calls) == 2, "checkpointing should have re-run layer 1 during backward"
    assert capture.outputs[1] is first, "the recomputation must not replace the forward's capture"
    assert calls[0] is first


def test_layer_out_of_range_names_the_valid_range(make_model):
    with pytest.raises(LayerResolutionError, match=r"valid indices are 0\.\.3 .*-4\.\.-1"):
        ActivationCapture(make_model("llama"), layers=[4])
    with pytest.raises(LayerResolutionError, match="out of range"):
        ActivationCapture(make_model("llama"), layers=[-5])


def test_unknown_module_path_lists_existing_submodules(make_model):
    with pytest.raises(LayerResolutionError) as error:
        ActivationCapture(make_model("qwen2"), layers=[0], module_path="self_attn.out_proj")
    message = str(error.value)
    assert "self_attn.out_proj" in message and "self_attn.o_proj" in message and "mlp.down_proj" in message


def test_same_layer_twice_is_rejected(make_model):
    with pytest.raises(LayerResolutionError, match="same layer twice"):
        ActivationCapture(make_model("llama"), layers=[3, -1])


def test_vision_tower_layers_are_not_mistaken_for_the_decoder():
    """Gemma-3 multimodal: the SigLIP encoder also has `layers[i].self_attn`."""
    from torch import nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.o_proj = nn.Linear(4, 4)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attention()

    class Tower(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.layers = nn.ModuleList(Block() for _ in range(n))

    class Multimodal(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_tower = nn.Module()
            self.vision_tower.encoder = Tower(2)
            self.language_model = Tower(5)

    path, layers = find_decoder_layers(Multimodal())
    assert path == "language_model.layers" and len(layers) == 5
