"""evaluate.py's engine: score, generate, classify, measure and report, base model vs SOO adapters.

Protocols: "forced_choice" (p(deceptive) from the options' log-probabilities, soo.eval.forced_choice),
"generation" (greedy answers labelled by soo.eval.classify), or "both" (the default; then the
forced choice's agreement with the generation labels is reported too).

Conditions: "base" (the adapter disabled) and one per adapter directory. Adapters that share a
training recipe and differ only in seed form one group, aggregated as mean ± SD across seeds; other
recipes (an LM-only control adapter, say) form groups of their own.
Every prompt/response is cached (JSONL, keyed by model, adapter weights, prompt and decoding), so
a killed run resumes without regenerating finished prompts and a re-run costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.core.io import read_run_config, write_jsonl_atomic
from soo.core.prompts import DEFAULT_ANSWER_PREFIX, DEFAULT_ANSWER_SUFFIX
from soo.eval.generation import DecodingConfig, GenerationCache, generate_with_cache, model_fingerprint
from soo.eval.rates import aggregate_seeds, authors_response_label, label_response, summarize_labels
from soo.eval.scenarios import build_eval_prompts

logger = logging.getLogger("soo.eval.engine")

BASE = "base"
PROTOCOLS = ("both", "forced_choice", "generation")


class AdapterMismatchError(ValueError):
    """An adapter was trained on a different base model than the one being evaluated."""


@dataclass
class EvalConfig:
    adapters: list[str] = field(default_factory=list)
    model_name_or_path: str | None = None
    scenarios: list[str] | None = None
    n: int = 250
    seed: int = 0
    max_new_tokens: int = 24
    batch_size: int = 16
    answer_suffix: str | None = None
    protocol: str = "both"
    answer_prefix: str | None = None
    pairs_path: str | None = None
    n_pairs: int = 200
    latent_all_layers: bool = False
    capability: bool = True
    mt_bench_export: bool = False
    out_dir: str = "results/eval"
    allow_base_mismatch: bool = False


# The fields that make two adapters the same recipe: runs that differ only in seed (or output
# directory, logging, ...) are replicates and aggregate into mean ± SD across seeds.
RECIPE_FIELDS = {
    "soo_args": ("lm_weight", "soo_weight", "soo_layers", "soo_module", "soo_token_mode"),
    "model_args": ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"),
    "data_args": ("data_path", "max_length", "use_chat_template", "system_prompt"),
    "training_args": ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                      "gradient_accumulation_steps"),
}


def recipe_key(run_config: dict) -> str:
    """A stable string naming an adapter's training recipe, seed excluded."""
    recipe = {section: {name: run_config.get(section, {}).get(name) for name in names}
              for section, names in RECIPE_FIELDS.items()}
    return json.dumps(recipe, sort_keys=True)


def group_names(run_configs: list[dict]) -> list[str]:
    """One group name per adapter: "soo" when all share a recipe, else named by the loss weights
    (e.g. "lm1_soo1" vs "lm1_soo0", the LM-only control), with an index where those collide."""
    keys = list(dict.fromkeys(recipe_key(config) for config in run_configs))
    if len(keys) <= 1:
        return ["soo"] * len(run_configs)
    names = {}
    for index, key in enumerate(keys):
        soo_args = json.loads(key)["soo_args"]
        names[key] = f"lm{soo_args['lm_weight']:g}_soo{soo_args['soo_weight']:g}" if (
            soo_args["lm_weight"] is not None and soo_args["soo_weight"] is not None) else f"recipe{index}"
    if len(set(names.values())) < len(names):
        names = {key: f"{name}_r{index}" for index, (key, name) in enumerate(names.items())}
    return [names[recipe_key(config)] for config in run_configs]


def check_adapter_base(adapter_dir: str, model_path: str) -> None:
    """Refuse an adapter whose recorded base model is not `model_path`."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterMismatchError(f"{adapter_dir} has no adapter_config.json: not a LoRA adapter directory.")
    recorded = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if recorded is None:
        return

    def same(a: str, b: str) -> bool:
        return a == b or (os.path.exists(a) and os.path.exists(b) and os.path.realpath(a) == os.path.realpath(b))

    if not same(recorded, model_path):
        raise AdapterMismatchError(
            f"Adapter {adapter_dir} was trained on '{recorded}', but the model being evaluated is '{model_path}'. "
            "Pass --model_name_or_path with the adapter's base model (or --allow_base_mismatch if you know they "
            "are the same weights)."
        )


def run_evaluation(config: EvalConfig) -> dict:
    """Evaluate the base model and every adapter; write the report to config.out_dir; return results."""
    from peft import PeftModel

    from soo.eval.capability import base_and_tuned_perplexity, export_mt_bench_style_answers, kl_to_base
    from soo.eval.capability import load_neutral_prompts
    from soo.eval.latent import latent_soo_by_layer
    from soo.core.modeling import adapter_disabled, inference_device_map, load_model, load_tokenizer, resolve_model_path
    from soo.data.pairs import generate_pairs, read_pairs_jsonl
    from soo.eval.forced_choice import generation_agreement, score_prompts, summarize_forced_choice
    from soo.eval.report import write_report

    run_configs = [read_run_config(adapter) for adapter in config.adapters]
    first = run_configs[0] if run_configs else {}
    model_name = config.model_name_or_path or first.get("model_path")
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}; valid: {', '.join(PROTOCOLS)}")
    answer_suffix = config.answer_suffix or first.get("model_args", {}).get("answer_suffix") or DEFAULT_ANSWER_SUFFIX
    answer_prefix = config.answer_prefix
    if answer_prefix is None:
        answer_prefix = first.get("model_args", {}).get("answer_prefix", DEFAULT_ANSWER_PREFIX)
    # Scenario names are checked before any model is loaded.
    prompts = build_eval_prompts(config.scenarios, n=config.n, seed=config.seed, answer_suffix=answer_suffix)
    model_path = resolve_model_path(model_name)
    for adapter in config.adapters:
        if not config.allow_base_mismatch:
            check_adapter_base(adapter, model_path)

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, device_map=inference_device_map())  # the GPUs when there are any
    conditions = [{"name": BASE, "group": BASE, "adapter": None}]
    groups = group_names(run_configs)
    for index, (adapter, run_config) in enumerate(zip(config.adapters, run_configs)):
        name = f"soo_{index}"
        if index == 0:
            model = PeftModel.from_pretrained(model, adapter, adapter_name=name)
        else:
            model.load_adapter(adapter, adapter_name=name)
        seed = run_config.get("training_args", {}).get("seed")
        conditions.append({"name": name, "group": groups[index], "adapter": adapter, "seed": seed,
                           "soo_args": run_config.get("soo_args", {})})
    model.eval()

    forced_rows = []
    if config.protocol in ("forced_choice", "both"):
        for condition in conditions:
            if condition["adapter"] is not None:
                model.set_adapter(condition["name"])
            with adapter_disabled(model) if condition["adapter"] is None else contextlib.nullcontext():
                scored = score_prompts(model, tokenizer, prompts, answer_prefix, batch_size=config.batch_size)
            forced_rows += [{"condition": condition["name"], "group": condition["group"], **row} for row in scored]
        write_jsonl_atomic(out_dir / "forced_choice.jsonl", forced_rows)

    decoding = DecodingConfig(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    cache = GenerationCache(out_dir / "generations.jsonl")
    texts = [prompt.prompt for prompt in prompts]
    rows = []
    for condition in conditions if config.protocol in ("generation", "both") else []:
        if condition["adapter"] is not None:
            model.set_adapter(condition["name"])
        with adapter_disabled(model) if condition["adapter"] is None else contextlib.nullcontext():
            responses = generate_with_cache(model, tokenizer, texts, decoding, cache,
                                            model_key=model_fingerprint(model_path, condition["adapter"]))
        for prompt, response in zip(prompts, responses):
            rows.append({"condition": condition["name"], "group": condition["group"], "scenario": prompt.scenario,
                         "order": prompt.order, "index": prompt.index, "kind": prompt.kind,
                         "deceptive_option": prompt.deceptive_option, "honest_option": prompt.honest_option,
                         "label": label_response(prompt, response),
                         "authors_label": authors_response_label(prompt, response),
                         "prompt": prompt.prompt, "response": response})
    empty = sum(1 for row in rows if not row["response"].strip())
    if empty:
        logger.warning("%d of %d responses are empty (counted as ambiguous); raise --max_new_tokens or check the "
                       "answer suffix if this is many.", empty, len(rows))
    summary = summarize_labels(rows)

    # Latent SOO on held-out pairs at the trained layers (or all layers), base vs each adapter.
    pairs = read_pairs_jsonl(config.pairs_path) if config.pairs_path else generate_pairs(config.n_pairs, seed=0,
                                                                                          split="test")
    soo_args = conditions[1]["soo_args"] if len(conditions) > 1 else {}
    latent_kwargs = dict(layers=None if config.latent_all_layers else soo_args.get("soo_layers"),
                         module_path=soo_args.get("soo_module", "self_attn.o_proj"),
                         token_mode=soo_args.get("soo_token_mode", "full"))
    latent = {}
    if latent_kwargs["layers"] is not None or config.latent_all_layers:
        latent[BASE] = latent_soo_by_layer(model, tokenizer, pairs, use_base=True, **latent_kwargs)
        for condition in conditions[1:]:
            model.set_adapter(condition["name"])
            latent[condition["name"]] = latent_soo_by_layer(model, tokenizer, pairs, **latent_kwargs)

    capability = {}
    if config.capability:
        neutral = load_neutral_prompts()
        for condition in conditions[1:]:
            model.set_adapter(condition["name"])
            capability[condition["name"]] = {"kl_to_base": kl_to_base(model, tokenizer, neutral),
                                             "perplexity": base_and_tuned_perplexity(model, tokenizer)}
    if config.mt_bench_export:
        for condition in conditions:
            if condition["adapter"] is None:
                with adapter_disabled(model):
                    export_mt_bench_style_answers(model, tokenizer, out_dir / "mt_bench_answers_base.jsonl", BASE)
            else:
                model.set_adapter(condition["name"])
                export_mt_bench_style_answers(model, tokenizer, out_dir / f"mt_bench_answers_{condition['name']}.jsonl",
                                              condition["name"])

    results = {
        "config": asdict(config),
        "model_path": model_path,
        "answer_suffix": answer_suffix,
        "protocol": config.protocol,
        "forced_choice": {
            "answer_prefix": answer_prefix,
            "summary": summarize_forced_choice(forced_rows),
            "agreement_with_generation": generation_agreement(forced_rows, rows),
        } if forced_rows else None,
        "decoding": decoding.key_fields(),
        "conditions": conditions,
        "rates": summary,
        "rates_across_seeds": aggregate_seeds(summary),
        "latent_soo": {name: {str(layer): values for layer, values in by_layer.items()}
                       for name, by_layer in latent.items()},
        "latent_pairs": len(pairs),
        "trained_layers": soo_args.get("soo_layers"),
        "capability": capability,
    }
    if rows:
        write_jsonl_atomic(out_dir / "responses.jsonl", rows)
    write_report(results, out_dir)
    return results


__all__ = ["EvalConfig", "run_evaluation", "check_adapter_base", "group_names"]
