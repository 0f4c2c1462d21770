"""`SOOTrainer`: a transformers Trainer whose loss is LM loss plus the SOO term, in one forward pass.

It reads its SOO settings from `SOOConfig` (`soo.train.config`), the TrainingArguments it is
given as `args`; batches come from `soo.core.pair_batch.SOOPairCollator` ([self; other] rows).

Loss per micro-batch:  lm_weight * mean_seq(LM loss) + soo_weight * mean_pairs(SOO distance).
The SOO distance is `soo_distance`: MSE between captured activations (logged as soo_loss), or the
released code's KL between output distributions (logged as soo_kl_logits, with the MSE at the
hooked layers beside it as soo_latent_mse, a diagnostic that trains nothing).
Both are means over examples, so `loss_is_scaled_for_ga = False` lets the Trainer divide by the
accumulation steps, and 2 micro-batches of 2 give exactly the gradient of one batch of 4.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer

from soo.core.capture import ActivationCapture, ForwardStopped
from soo.core.loss import activation_spread_per_pair, kl_logits_per_pair, lm_loss_per_sequence, soo_distance_per_pair
from soo.train.config import SOOConfig
from soo.train.distributed import zero_stage
from soo.train.preemption import mark_checkpoint_complete
from soo.train.recipe import write_checkpoint_history

logger = logging.getLogger("soo")

# The logged name of the trained SOO term for each distance ("soo_loss" kept for MSE: earlier runs,
# sweeps and reports read it).
SOO_METRIC = {"mse": "soo_loss", "kl_logits": "soo_kl_logits"}


class NonFiniteLossError(FloatingPointError):
    pass


class SOOTrainer(Trainer):
    """transformers Trainer whose loss is `lm_weight * LM + soo_weight * SOO`.

    `args` is a `SOOConfig`: lm_weight, soo_weight, soo_layers, soo_module, soo_token_mode and
    soo_early_exit beside every Trainer setting. Forward hooks are registered once, here, and kept.
    """

    # Our loss is a mean per micro-batch: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model, args: SOOConfig, **kwargs):
        if not isinstance(args, SOOConfig):
            raise TypeError(f"SOOTrainer needs a SOOConfig as args, got {type(args).__name__}.")
        if not args.soo_layers:
            raise ValueError("SOOConfig.soo_layers is empty: name the decoder layer(s) to compare.")
        # Our batch keys (pair indices, span masks) are not model inputs; keep them.
        args.remove_unused_columns = False
        args.label_names = ["labels"]
        super().__init__(model=model, args=args, **kwargs)
        # Never pass num_items_in_batch to the model: we compute both losses ourselves.
        self.model_accepts_loss_kwargs = False
        self.capture = ActivationCapture(self.model, args.soo_layers, args.soo_module)
        # soo.train.recipe.RunHistory of the run (set by run_finetuning), written into each checkpoint.
        self.history = None
        # SOO-only training needs nothing after the deepest hooked module. Not under ZeRO-3: its
        # parameter gathering follows module hooks that an interrupted forward would leave unbalanced.
        self.early_exit = (
            args.soo_early_exit and args.lm_weight == 0 and zero_stage(args) != 3 and args.soo_distance == "mse"
        )
        if args.soo_distance == "kl_logits":
            logger.info(
                "SOO distance kl_logits (%s positions): the loss needs the output logits, so every forward "
                "runs the whole model (no early exit).",
                args.soo_kl_positions,
            )
        # [sum, sum of squares, count] per metric since the last log: exact means over pairs and
        # sequences, and the spread for a 95% interval, all summable across processes.
        self._metric_stats = {
            mode: defaultdict(lambda: torch.zeros(3, dtype=torch.float64)) for mode in ("train", "eval")
        }
        self._eval_prefix = "eval"
        self._evaluating = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.capture.reset()
        # Not `model.training`: a DeepSpeed engine still reports training=True inside evaluate().
        mode = "eval" if self._evaluating else "train"
        # Evaluation reports the LM loss too, so it always runs the whole model.
        self.capture.stop_after_capture = self.early_exit and mode == "train"
        try:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        except ForwardStopped:
            outputs = None
        finally:
            self.capture.stop_after_capture = False

        layer_activations = self.capture.stacked()
        token_mode = self.args.soo_token_mode
        if self.args.soo_distance == "kl_logits":
            soo_per_pair = kl_logits_per_pair(outputs.logits, inputs, self.args.soo_kl_positions)
            with torch.no_grad():  # diagnostic: the paper's distance at the hooked layers
                self._record(mode, "soo_latent_mse", self._latent_mse(layer_activations, inputs))
        else:
            soo_per_pair = self._latent_mse(layer_activations, inputs)
            if mode == "train" and torch.is_grad_enabled() and not soo_per_pair.requires_grad:
                raise RuntimeError(
                    "The captured activations carry no gradient, so the SOO term cannot train anything. "
                    "With --activation_checkpointing use non-reentrant checkpointing "
                    "(--activation_checkpointing_kwargs '{\"use_reentrant\": false}', the default)."
                )
        soo = soo_per_pair.mean()
        loss = self.args.soo_weight * soo
        self._record(mode, SOO_METRIC[self.args.soo_distance], soo_per_pair)
        with torch.no_grad():  # diagnostic: does SOO fall because the hooked output stops varying at all?
            spread = torch.stack([activation_spread_per_pair(acts, inputs, token_mode) for acts in layer_activations])
            self._record(mode, "soo_act_spread", spread.mean(0))

        lm_per_sequence = None
        if self.args.lm_weight > 0 or mode == "eval":
            lm_per_sequence = lm_loss_per_sequence(outputs.logits, inputs["labels"])
            if self.args.lm_weight > 0:
                loss = loss + self.args.lm_weight * lm_per_sequence.mean()
            self._record(mode, "lm_loss", lm_per_sequence)

        if not torch.isfinite(loss):
            lm_text = "not computed" if lm_per_sequence is None else f"{lm_per_sequence.mean().item():.4g}"
            raise NonFiniteLossError(
                f"Non-finite loss at step {self.state.global_step + 1} ({mode}): "
                f"{SOO_METRIC[self.args.soo_distance]}={soo.item():.4g}, "
                f"lm_loss={lm_text}. Under fp16 (most often with Gemma-2/3) activations overflow: "
                "use --bf16 where the GPU has it, or fp32; otherwise lower --learning_rate."
            )
        return (loss, outputs) if return_outputs else loss

    def _latent_mse(self, layer_activations, inputs) -> torch.Tensor:
        """MSE between self and other activations per pair, averaged over the SOO layers."""
        token_mode = self.args.soo_token_mode
        return torch.stack([soo_distance_per_pair(acts, inputs, token_mode) for acts in layer_activations]).mean(0)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # The Trainer also pickles its arguments (training_args.bin), loadable only by running
        # pickle; soo_run_config.json keeps them as JSON, so the pickle is not left behind.
        # Checkpoints are saved through here too.
        if self.args.should_save:
            from transformers.trainer import TRAINING_ARGS_NAME

            Path(output_dir or self.args.output_dir, TRAINING_ARGS_NAME).unlink(missing_ok=True)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        # Every rank writes its own shards (ZeRO): mark the checkpoint complete only once all are done,
        # so that a job killed mid-save resumes from the previous checkpoint instead of a torn one.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            checkpoint = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            if self.history is not None:  # its recipe and segments, so a resume can check them
                write_checkpoint_history(checkpoint, self.history, self.state.global_step)
            mark_checkpoint_complete(checkpoint)

    def _record(self, mode: str, name: str, values: torch.Tensor) -> None:
        # On the host: the running sums live there, and a count made with torch.tensor() is a CPU
        # tensor that torch.stack cannot join to CUDA ones (found by benchmarks/gpu_check.py).
        values = values.detach().double().cpu()
        stats = self._metric_stats[mode][name]
        stats += torch.stack([values.sum(), values.pow(2).sum(), torch.tensor(values.numel(), dtype=torch.float64)])

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._eval_prefix = metric_key_prefix
        self._evaluating = True
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._evaluating = False

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if "loss" in logs else "eval"
        prefix = "" if mode == "train" else f"{self._eval_prefix}_"
        stats = self._metric_stats[mode]
        names = sorted(stats)
        if names:
            totals = torch.stack([stats[name] for name in names])
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
            for name, (total, total_sq, count) in zip(names, totals.tolist()):
                mean = total / count
                logs[f"{prefix}{name}"] = mean
                if mode == "eval":
                    logs[f"{prefix}{name}_n"] = int(count)
                    variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
                    logs[f"{prefix}{name}_ci95"] = 1.96 * math.sqrt(variance / count)
        stats.clear()
        super().log(logs, start_time)
