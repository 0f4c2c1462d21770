"""Find a decoder layer's submodule and capture its output during the forward pass.

SOO compares the output of `self_attn.o_proj` at one or more decoder layers. This module
resolves those modules on any of the supported architectures (Llama, Mistral, Gemma-2,
Gemma-3 text or multimodal, Qwen2), with or without the peft LoRA wrapper and under
DeepSpeed ZeRO-3 (which partitions parameters but leaves the module tree intact), and
registers forward hooks that keep the captured tensors attached to the autograd graph.

Hook rules (each one fixes a bug seen in other implementations):
  * the hook stores `output` itself, never `output.detach()`: the SOO term must reach LoRA;
  * the hook returns None: a returned value would replace the module's output;
  * only the first call per forward is kept: gradient checkpointing re-runs the forward of a
    layer during backward, which fires the hook again on recomputed tensors;
  * hooks stay registered for the whole run; `reset()` clears captures between steps.
Under peft, `o_proj` is a LoRA wrapper; hooking it captures base + LoRA output, which is what
SOO must move (`.base_layer` would give only the frozen base output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LayerResolutionError(ValueError):
    """The requested layer or submodule does not exist in this model."""


# Substrings of module paths that hold non-text encoders (Gemma-3's SigLIP tower has
# `encoder.layers` whose entries also have a `self_attn`).
_NON_TEXT_PARTS = ("vision", "audio", "image", "multi_modal_projector")


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return (path, layers) of the text decoder's layer list.

    The decoder layers are the `nn.ModuleList` named `layers` whose entries have a
    `self_attn` attribute, outside any vision/audio tower. Works through peft and
    multimodal wrappers because it searches the module tree instead of hard-coding paths
    (`model.layers`, `base_model.model.model.layers`, `model.language_model.layers`, ...).
    """
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if name.split(".")[-1] != "layers" or not hasattr(module[0], "self_attn"):
            continue
        if any(part in name for part in _NON_TEXT_PARTS):
            continue
        candidates.append((name, module))
    if not candidates:
        raise LayerResolutionError(
            f"Could not find the decoder layers of {type(model).__name__}: no module list named "
            "'layers' whose entries have a 'self_attn' submodule."
        )
    # Prefer the language model explicitly; otherwise the first (outermost) list found.
    for name, module in candidates:
        if "language_model" in name:
            return name, module
    return candidates[0]


def normalize_layer_indices(layer_indices: Sequence[int], num_layers: int) -> list[int]:
    """Map possibly negative layer indices to 0-based ones; reject out-of-range or repeated ones."""
    if not layer_indices:
        raise LayerResolutionError("No SOO layer given: pass at least one index with --soo_layers.")
    normalized = []
    for index in layer_indices:
        if not -num_layers <= index < num_layers:
            raise LayerResolutionError(
                f"SOO layer {index} is out of range: this model has {num_layers} decoder layers, "
                f"valid indices are 0..{num_layers - 1} (or -{num_layers}..-1 from the end)."
            )
        normalized.append(index % num_layers)
    if len(set(normalized)) != len(normalized):
        raise LayerResolutionError(f"SOO layers {list(layer_indices)} name the same layer twice.")
    return normalized


def get_submodule_at_layer(layer: nn.Module, module_path: str, layer_index: int) -> nn.Module:
    """Return `layer.<module_path>`, or an error that lists the submodules that do exist."""
    try:
        return layer.get_submodule(module_path)
    except AttributeError:
        available = [name for name, _ in layer.named_modules() if name]
        # Hide peft internals (lora_A.default, ...) that nobody would hook on purpose.
        available = [name for name in available if ".lora_" not in name and "base_layer" not in name]
        raise LayerResolutionError(
            f"Module path '{module_path}' not found at decoder layer {layer_index}. "
            f"Submodules that exist there: {', '.join(available)}"
        ) from None


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Cannot capture a module output of type {type(output).__name__}.")


class ForwardStopped(Exception):
    """Raised by the deepest SOO hook when `stop_after_capture` is set: the rest of the forward
    (later layers, the LM head) cannot affect an SOO-only loss, so it is not run."""


class ActivationCapture:
    """Forward hooks that record one module's output per SOO layer, with its graph.

    Usage:
        capture = ActivationCapture(model, layers=[20], module_path="self_attn.o_proj")
        capture.reset(); model(**batch); acts = capture.outputs  # {20: tensor[B, T, H]}
    Keep the object (and its hooks) for the whole run; call `remove()` only at the end.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], module_path: str = "self_attn.o_proj"):
        self.layers_path, decoder_layers = find_decoder_layers(model)
        self.num_layers = len(decoder_layers)
        self.layer_indices = normalize_layer_indices(layers, self.num_layers)
        self.module_path = module_path
        self.modules = {
            index: get_submodule_at_layer(decoder_layers[index], module_path, index) for index in self.layer_indices
        }
        self.outputs: dict[int, torch.Tensor] = {}
        # Early exit for SOO-only training (see ForwardStopped); off unless the trainer turns it on.
        self.stop_after_capture = False
        self._deepest_layer = max(self.layer_indices)
        self._handles = [module.register_forward_hook(self._make_hook(index)) for index, module in self.modules.items()]

    def _make_hook(self, layer_index: int):
        def hook(module, args, output):
            # First call per forward only: recomputation under gradient checkpointing fires again.
            if layer_index not in self.outputs:
                self.outputs[layer_index] = _first_tensor(output)
                if self.stop_after_capture and layer_index == self._deepest_layer:
                    raise ForwardStopped
            return None

        return hook

    def reset(self) -> None:
        self.outputs = {}

    def stacked(self) -> list[torch.Tensor]:
        """Captured outputs in layer order; raises if a forward did not reach every SOO layer."""
        missing = [index for index in self.layer_indices if index not in self.outputs]
        if missing:
            raise RuntimeError(
                f"No activation captured at layer(s) {missing} ({self.module_path}): "
                "did the forward pass run, and does it pass through that module?"
            )
        return [self.outputs[index] for index in self.layer_indices]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def describe(self) -> str:
        layers = ", ".join(str(index) for index in self.layer_indices)
        return f"{self.layers_path}[{layers}].{self.module_path} (of {self.num_layers} layers)"
