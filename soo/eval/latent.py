"""Latent SOO: the self/other activation distance on held-out pairs, per layer, base vs tuned.

Uses the same dataset, collator, hooks and distance as training (one definition of SOO), on
every requested layer in one forward pass per batch.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from soo.core.capture import ActivationCapture, find_decoder_layers
from soo.core.loss import activation_spread_per_pair, soo_distance_per_pair
from soo.core.modeling import model_device
from soo.core.pair_batch import SOOPairCollator, SOOPairDataset
from soo.core.stats import mean_ci95


@torch.inference_mode()
def latent_soo_by_layer(
    model,
    tokenizer,
    records: list[dict],
    layers: list[int] | None = None,
    module_path: str = "self_attn.o_proj",
    token_mode: str = "full",
    batch_size: int = 8,
    use_chat_template: bool = True,
    progress: bool = True,
) -> dict:
    """{layer: {"soo_loss", "soo_loss_ci95", "soo_act_spread", "soo_relative", "soo_loss_n"}} over `records`
    (layers None = every layer); the same names as training's held-out metrics. Measures the model
    as it is: for a peft model's base weights, call it inside `soo.core.modeling.adapter_disabled`.
    """
    model.eval()
    if layers is None:
        layers = list(range(len(find_decoder_layers(model)[1])))
    capture = ActivationCapture(model, layers, module_path)
    dataset = SOOPairDataset(records, tokenizer, max_length=10_000, use_chat_template=use_chat_template)
    collator = SOOPairCollator(tokenizer.pad_token_id, token_mode=token_mode)
    device = model_device(model)
    distances = {layer: [] for layer in capture.layer_indices}
    spreads = {layer: [] for layer in capture.layer_indices}
    try:
        for start in tqdm(range(0, len(dataset), batch_size), desc="latent SOO", disable=not progress):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            capture.reset()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            for layer in capture.layer_indices:
                acts = capture.outputs[layer]
                distances[layer] += soo_distance_per_pair(acts, batch, token_mode).tolist()
                spreads[layer] += activation_spread_per_pair(acts, batch, token_mode).tolist()
    finally:
        capture.remove()
    result = {}
    for layer in capture.layer_indices:
        soo, ci95 = mean_ci95(distances[layer])
        spread = sum(spreads[layer]) / len(spreads[layer])
        result[layer] = {
            "soo_loss": soo,
            "soo_loss_ci95": ci95,
            "soo_act_spread": spread,
            "soo_relative": soo / spread if spread else float("nan"),
            "soo_loss_n": len(distances[layer]),
        }
    return result
