"""One SOO fine-tuning run: load data and model, add LoRA, train, measure, save.

`finetuning.py` is a thin CLI over `run_finetuning`; see its docstring for launch commands.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback, set_seed

from soo.core.capture import ActivationCapture, find_decoder_layers
from soo.core.io import RUN_CONFIG_FILE, write_json_atomic
from soo.core.modeling import (
    add_lora,
    load_model,
    load_tokenizer,
    native_padding_side,
    resolve_model_path,
    warn_if_fp16_unsafe,
)
from soo.core.pair_batch import SOOPairCollator, tokenize_pairs
from soo.data.pair_io import load_pairs
from soo.train.config import SOOConfig
from soo.train.distributed import init_deepspeed_on_cpu
from soo.train.preemption import PreemptionCallback, choose_resume_checkpoint, remove_incomplete_checkpoints
from soo.train.recipe import check_resume, recipe_of
from soo.train.trainer import SOOTrainer

logger = logging.getLogger("soo")

HELDOUT_FILE = "heldout_soo.json"
# Held-out metrics of the untrained model, kept so a resumed run reports the true "before".
HELDOUT_BEFORE_FILE = "heldout_before.json"


def _heldout_summary(metrics: dict, prefix: str) -> dict:
    keys = (
        "soo_loss",
        "soo_loss_ci95",
        "soo_loss_n",
        "soo_kl_logits",
        "soo_kl_logits_ci95",
        "soo_kl_logits_n",
        "soo_latent_mse",
        "soo_latent_mse_ci95",
        "soo_act_spread",
        "lm_loss",
        "lm_loss_ci95",
    )
    summary = {key: metrics[f"{prefix}_{key}"] for key in keys if f"{prefix}_{key}" in metrics}
    # Scale-free SOO: a fall in the MSE that comes with a collapsing spread is not overlap.
    latent = summary.get("soo_loss", summary.get("soo_latent_mse"))
    summary["soo_relative"] = latent / summary["soo_act_spread"]
    return summary


def pair_collator(tokenizer, data_args, config: SOOConfig) -> SOOPairCollator:
    """The batch layout the SOO settings ask for: right padding to the batch's longest prompt, or
    the released code's (each prompt padded alone to --max_length, pad = EOS as they set it)."""
    if config.soo_distance == "kl_logits" and config.soo_kl_positions == "released":
        side = native_padding_side(tokenizer) if data_args.padding_side == "tokenizer" else data_args.padding_side
        return SOOPairCollator(
            pad_token_id=tokenizer.eos_token_id,
            token_mode=config.soo_token_mode,
            fixed_length=data_args.max_length,
            padding_side=side,
        )
    return SOOPairCollator(pad_token_id=tokenizer.pad_token_id, token_mode=config.soo_token_mode)


class _HeldoutBeforeCallback(TrainerCallback):
    """Held-out metrics of the untrained model, measured when training begins.

    Not with `trainer.evaluate()` before `train()`: under DeepSpeed that builds an inference
    engine and the training step then finds no engine to call backward on. At train begin the
    LoRA B matrices are still zero, so this is the base model's behaviour.
    """

    def __init__(self, trainer, path: Path):
        self.trainer, self.path = trainer, path
        self.summary, self.seconds = None, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        started = time.perf_counter()
        self.summary = _heldout_summary(self.trainer.evaluate(metric_key_prefix="heldout_before"), "heldout_before")
        self.seconds = time.perf_counter() - started
        if self.trainer.is_world_process_zero():
            write_json_atomic(self.path, self.summary)


def run_finetuning(
    model_args, data_args, config: SOOConfig, config_path: str | None = None, callbacks: list | None = None
) -> dict:
    """Train and save; returns {"heldout_before": ..., "heldout_after": ..., "train": ...}.

    On SIGUSR1/SIGTERM it saves a checkpoint and returns early with {"preempted": True, ...};
    a later call with the same output_dir resumes from the last complete checkpoint.
    """
    # Handlers first: a signal that arrives while the model loads must not kill the job unsaved.
    preemption = PreemptionCallback()
    try:
        return _run(model_args, data_args, config, config_path, preemption, callbacks or [])
    finally:
        preemption.restore_handlers()


def _run(model_args, data_args, config: SOOConfig, config_path, preemption, callbacks) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    init_deepspeed_on_cpu(config)  # gloo process group before ZeRO-3 partitions the weights
    set_seed(config.seed)  # before LoRA init, so adapters start the same for a seed

    # Data first: a bad file fails in a second, before any model is loaded.
    train_pairs = load_pairs(data_args.data_path, split="train")
    eval_pairs = load_pairs(data_args.eval_data_path, split="test") if data_args.eval_data_path else None

    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, model_args.trust_remote_code)
    model = load_model(
        model_path,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        load_in_4bit=model_args.load_in_4bit,
        trust_remote_code=model_args.trust_remote_code,
    )
    model_type = model.config.model_type
    warn_if_fp16_unsafe(model_type, config.fp16)

    num_layers = len(find_decoder_layers(model)[1])
    if not config.soo_layers:
        config.soo_layers = [num_layers // 2]
        logger.info("No --soo_layers given: using the middle layer, %d of %d.", num_layers // 2, num_layers)
    # Validate layers and module path now, before anything is written (the trainer hooks them later).
    probe = ActivationCapture(model, config.soo_layers, config.soo_module)
    config.soo_layers = probe.layer_indices
    probe.remove()

    if config.activation_checkpointing and not config.activation_checkpointing_kwargs:
        # Reentrant checkpointing runs the forward without grad: the captured activations
        # would carry no gradient. Non-reentrant keeps them in the graph.
        config.activation_checkpointing_kwargs = {"use_reentrant": False}
    model = add_lora(
        model,
        r=model_args.lora_r,
        alpha=model_args.lora_alpha,
        dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        quantized=model_args.load_in_4bit,
        gradient_checkpointing=config.activation_checkpointing,
    )

    dataset_kwargs = dict(
        tokenizer=tokenizer,
        max_length=data_args.max_length,
        use_chat_template=data_args.use_chat_template,
        system_prompt=data_args.system_prompt,
    )
    # Rank 0 tokenizes and writes the map cache; the other ranks then read it.
    with config.main_process_first(desc="tokenizing pairs"):
        train_dataset = tokenize_pairs(train_pairs, **dataset_kwargs)
        eval_dataset = tokenize_pairs(eval_pairs, **dataset_kwargs) if eval_pairs is not None else None
    trainer = SOOTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=pair_collator(tokenizer, data_args, config),
        processing_class=tokenizer,
        callbacks=[preemption, *callbacks],
    )
    if trainer.is_world_process_zero():
        trainable, total = model.get_nb_trainable_parameters()
        logger.info(
            "Model %s (%s), SOO %s at %s, token mode %s, lm_weight %g, soo_weight %g; LoRA %.2fM of %.1fM params; "
            "%d training pairs%s.",
            model_args.model_name_or_path or "embedded SmolLM2-135M-Instruct",
            model_type,
            config.soo_distance
            if config.soo_distance == "mse"
            else f"{config.soo_distance} ({config.soo_kl_positions})",
            trainer.capture.describe() if config.soo_distance == "mse" else "the output logits",
            config.soo_token_mode,
            config.lm_weight,
            config.soo_weight,
            trainable / 1e6,
            total / 1e6,
            len(train_dataset),
            f", {len(eval_dataset)} held-out pairs" if eval_dataset else "",
        )

    output_dir = Path(config.output_dir)
    if trainer.is_world_process_zero():
        for path in remove_incomplete_checkpoints(str(output_dir)):
            logger.warning("Removed %s: its save was interrupted (no completion marker).", path)
    trainer.accelerator.wait_for_everyone()
    resume_checkpoint = choose_resume_checkpoint(config.resume_from_checkpoint, str(output_dir))
    # Before any step: a checkpoint trained with other settings is not resumed (soo.train.recipe).
    trainer.history = check_resume(resume_checkpoint, recipe_of(model_args, data_args, config, model_path), config)
    if resume_checkpoint is not None:
        logger.info("Resuming from %s (pass --resume_from_checkpoint no to start over).", resume_checkpoint)

    results = {}
    before = _HeldoutBeforeCallback(trainer, output_dir / HELDOUT_BEFORE_FILE)
    if eval_dataset is not None:
        if resume_checkpoint is not None and before.path.is_file():
            results["heldout_before"] = json.loads(before.path.read_text(encoding="utf-8"))
        else:
            trainer.add_callback(before)
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_checkpoint)
    if before.summary is not None:
        results["heldout_before"] = before.summary
    wall_seconds = time.perf_counter() - started - before.seconds
    results["train"] = {"wall_seconds": wall_seconds, **train_output.metrics}
    if preemption.preempted:
        checkpoint = output_dir / f"checkpoint-{trainer.state.global_step}"
        logger.warning(
            "Stopped by a signal at step %d of %d; checkpoint %s. Run again with the same --output_dir to resume.",
            trainer.state.global_step,
            trainer.state.max_steps,
            checkpoint,
        )
        return {**results, "preempted": True, "checkpoint": str(checkpoint), "global_step": trainer.state.global_step}
    if eval_dataset is not None:
        results["heldout_after"] = _heldout_summary(
            trainer.evaluate(metric_key_prefix="heldout_after"), "heldout_after"
        )

    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        run_config = {
            "config_file": config_path,
            "model_path": model_path,
            "model_type": model_type,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "model_args": dataclasses.asdict(model_args),
            "data_args": dataclasses.asdict(data_args),
            "soo_args": config.soo_settings(),
            "training_args": config.to_dict(),
            # What changes the result, and which steps ran under which command.
            **trainer.history.at_step(trainer.state.global_step),
        }
        write_json_atomic(output_dir / RUN_CONFIG_FILE, run_config)
        write_json_atomic(output_dir / HELDOUT_FILE, results)
        if model_args.merge_adapter:
            merged_dir = output_dir / "merged"
            trainer.model.merge_and_unload().save_pretrained(merged_dir)
            tokenizer.save_pretrained(merged_dir)
            logger.info("Saved the merged model to %s", merged_dir)
        print(format_heldout_report(results, config))
    return results


def _before_after(before: dict, after: dict, key: str) -> list[str]:
    change = (after[key] - before[key]) / before[key] * 100 if before[key] else float("nan")
    return [
        f"  before: {before[key]:.5f} ± {before[key + '_ci95']:.5f}",
        f"  after:  {after[key]:.5f} ± {after[key + '_ci95']:.5f}   ({change:+.1f}%)",
    ]


def format_heldout_report(results: dict, config: SOOConfig) -> str:
    before, after = results.get("heldout_before"), results.get("heldout_after")
    lines = [
        f"Training: {results['train']['wall_seconds']:.0f} s, final train loss {results['train'].get('train_loss', float('nan')):.4g}"
    ]
    if before and after:
        layers = ",".join(str(layer) for layer in config.soo_layers)
        where = f"layer {layers}, {config.soo_module}, {config.soo_token_mode} tokens"
        if config.soo_distance == "kl_logits":
            lines += [
                f"Held-out SOO (KL(P_other || P_self) of the output distributions, {config.soo_kl_positions} "
                f"positions, summed per pair, n={before['soo_kl_logits_n']} pairs, mean ± 95% CI):",
                *_before_after(before, after, "soo_kl_logits"),
                f"Held-out latent MSE (self vs other, {where}; not trained): "
                f"before {before['soo_latent_mse']:.5f}, after {after['soo_latent_mse']:.5f}",
            ]
        else:
            lines += [
                f"Held-out SOO (MSE self vs other, {where}, n={before['soo_loss_n']} pairs, mean ± 95% CI):",
                *_before_after(before, after, "soo_loss"),
            ]
        lines += [
            f"Activation spread (variance of the compared activations across tokens and prompts): "
            f"before {before['soo_act_spread']:.5f}, after {after['soo_act_spread']:.5f}",
            f"Relative SOO (SOO / spread; ~2 = self no closer to its other than to anything else): "
            f"before {before['soo_relative']:.4f}, after {after['soo_relative']:.4f}",
            f"Held-out LM loss: before {before['lm_loss']:.4f}, after {after['lm_loss']:.4f}",
        ]
    return "\n".join(lines)
