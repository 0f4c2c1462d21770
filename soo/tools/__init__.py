"""Stand-alone commands around a run; may import any soo package, nothing imports them.

memory      python -m soo.tools.memory CONFIG --gpus N --nodes M: per-GPU/per-node memory plan
            for ZeRO-2/3 (bundled architecture configs in model_configs/, runs offline)
memory_model     the plan's inputs: a config's run settings, the architecture (local, cache or
            bundled), exact parameter and LoRA counts on a meta-device model
memory_estimate  the plan's arithmetic: DeepSpeed's full fine-tuning estimators and the
            LoRA-aware bytes per GPU and per node (weights, LoRA, activations, logits)
merge       python -m soo.tools.merge OUTPUT_DIR: merge a saved adapter into its base model
lm_eval_compare  python -m soo.tools.lm_eval_compare ADAPTER: base vs base + adapter on
            lm-evaluation-harness tasks, paired deltas (optional extra: requirements-eval.txt)
tiny_model  python -m soo.tools.tiny_model DIR --arch gemma2: tiny random-weight models of the
            real architectures with an offline tokenizer, for tests and launcher smoke runs
"""
