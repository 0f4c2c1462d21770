"""evaluate.py's engine: score, generate, classify, measure and report, base model vs SOO adapters.

The evaluation in Inspect's terms: the scenarios are the dataset (soo.eval.scenarios), forced
choice and generation are the solvers (soo.eval.forced_choice, soo.eval.generation), labels and
rates are the scorer (soo.eval.rates). This module only runs the phases in order, each over every
condition, and `active_condition` is the one place that switches the model between conditions.

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
from dataclasses import asdict, dataclass
from pathlib import Path

from peft import PeftModel

from soo.core.io import read_run_config, write_jsonl_atomic
from soo.core.modeling import adapter_disabled, inference_device_map, load_model, load_tokenizer, resolve_model_path
from soo.core.prompts import DEFAULT_ANSWER_PREFIX, DEFAULT_ANSWER_SUFFIX
from soo.data.pair_generation import generate_pairs
from soo.data.pair_io import read_pairs_jsonl
from soo.eval.capability import (
    base_and_tuned_perplexity,
    export_mt_bench_style_answers,
    kl_to_base,
    load_neutral_prompts,
)
from soo.eval.config import PROTOCOLS, EvalConfig
from soo.eval.forced_choice import generation_agreement, score_prompts, summarize_forced_choice
from soo.eval.generation import DecodingConfig
from soo.eval.generation_cache import GenerationCache, generate_with_cache, model_fingerprint
from soo.eval.latent import latent_soo_by_layer
from soo.eval.rates import aggregate_seeds, authors_response_label, label_response, summarize_labels
from soo.eval.report import write_report
from soo.eval.scenarios import EvalPrompt, build_eval_prompts

logger = logging.getLogger("soo.eval.engine")

BASE = "base"


class AdapterMismatchError(ValueError):
    """An adapter was trained on a different base model than the one being evaluated."""


# The fields that make two adapters the same recipe: runs that differ only in seed (or output
# directory, logging, ...) are replicates and aggregate into mean ± SD across seeds.
RECIPE_FIELDS = {
    "soo_args": ("lm_weight", "soo_weight", "soo_layers", "soo_module", "soo_token_mode"),
    "model_args": ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"),
    "data_args": ("data_path", "max_length", "use_chat_template", "system_prompt"),
    "training_args": (
        "learning_rate",
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    ),
}


def recipe_key(run_config: dict) -> str:
    """A stable string naming an adapter's training recipe, seed excluded."""
    recipe = {
        section: {name: run_config.get(section, {}).get(name) for name in names}
        for section, names in RECIPE_FIELDS.items()
    }
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
        names[key] = (
            f"lm{soo_args['lm_weight']:g}_soo{soo_args['soo_weight']:g}"
            if (soo_args["lm_weight"] is not None and soo_args["soo_weight"] is not None)
            else f"recipe{index}"
        )
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


# --------------------------------------------------------------------------------------------
# The phases of a run (run_evaluation calls them in this order)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSetup:
    """What a run needs before any model is loaded, every input already checked."""

    model_path: str
    run_configs: list[dict]  # one soo_run_config.json per adapter
    answer_suffix: str
    answer_prefix: str
    prompts: list[EvalPrompt]


def prepare_run(config: EvalConfig) -> EvalSetup:
    """Resolve the base model, answer suffix / prefix and prompts; refuse bad input before loading a model."""
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
    return EvalSetup(model_path, run_configs, answer_suffix, answer_prefix, prompts)


def load_conditions(setup: EvalSetup, adapters: list[str]) -> tuple:
    """(model, tokenizer, conditions): the base model with every adapter loaded under its condition's
    name; conditions[0] is the base, then one per adapter with its group, seed and SOO settings."""
    tokenizer = load_tokenizer(setup.model_path)
    model = load_model(setup.model_path, device_map=inference_device_map())  # the GPUs when there are any
    conditions = [{"name": BASE, "group": BASE, "adapter": None}]
    groups = group_names(setup.run_configs)
    for index, (adapter, run_config) in enumerate(zip(adapters, setup.run_configs)):
        name = f"soo_{index}"
        if index == 0:
            model = PeftModel.from_pretrained(model, adapter, adapter_name=name)
        else:
            model.load_adapter(adapter, adapter_name=name)
        seed = run_config.get("training_args", {}).get("seed")
        conditions.append(
            {
                "name": name,
                "group": groups[index],
                "adapter": adapter,
                "seed": seed,
                "soo_args": run_config.get("soo_args", {}),
            }
        )
    model.eval()
    return model, tokenizer, conditions


@contextlib.contextmanager
def active_condition(model, condition: dict):
    """The model computes as `condition` for the duration: the base weights (adapter disabled), or
    that condition's adapter."""
    if condition["adapter"] is None:
        with adapter_disabled(model):
            yield
    else:
        model.set_adapter(condition["name"])
        yield


def score_forced_choice(
    model, tokenizer, conditions: list[dict], prompts: list[EvalPrompt], answer_prefix: str, batch_size: int
) -> list[dict]:
    """Forced-choice rows (p(deceptive) per prompt), every condition."""
    rows = []
    for condition in conditions:
        with active_condition(model, condition):
            scored = score_prompts(model, tokenizer, prompts, answer_prefix, batch_size=batch_size)
        rows += [{"condition": condition["name"], "group": condition["group"], **row} for row in scored]
    return rows


def generate_and_label(
    model,
    tokenizer,
    conditions: list[dict],
    prompts: list[EvalPrompt],
    decoding: DecodingConfig,
    cache: GenerationCache,
    model_path: str,
) -> list[dict]:
    """One row per condition and prompt: the greedy answer (from the cache when it is there), its
    label and the authors' rule's label."""
    texts = [prompt.prompt for prompt in prompts]
    rows = []
    for condition in conditions:
        with active_condition(model, condition):
            responses = generate_with_cache(
                model, tokenizer, texts, decoding, cache, model_key=model_fingerprint(model_path, condition["adapter"])
            )
        for prompt, response in zip(prompts, responses):
            rows.append(
                {
                    "condition": condition["name"],
                    "group": condition["group"],
                    "scenario": prompt.scenario,
                    "order": prompt.order,
                    "index": prompt.index,
                    "kind": prompt.kind,
                    "deceptive_option": prompt.deceptive_option,
                    "honest_option": prompt.honest_option,
                    "label": label_response(prompt, response),
                    "authors_label": authors_response_label(prompt, response),
                    "prompt": prompt.prompt,
                    "response": response,
                }
            )
    empty = sum(1 for row in rows if not row["response"].strip())
    if empty:
        logger.warning(
            "%d of %d responses are empty (counted as ambiguous); raise --max_new_tokens or check the "
            "answer suffix if this is many.",
            empty,
            len(rows),
        )
    return rows


def heldout_pairs(config: EvalConfig) -> list[dict]:
    """Latent SOO's pairs: --pairs_path, else n_pairs freshly generated test-split pairs."""
    return (
        read_pairs_jsonl(config.pairs_path)
        if config.pairs_path
        else generate_pairs(config.n_pairs, seed=0, split="test")
    )


def trained_soo_args(conditions: list[dict]) -> dict:
    """The first adapter's SOO settings (layers, module, token mode); {} with no adapter."""
    return conditions[1]["soo_args"] if len(conditions) > 1 else {}


def measure_latent_soo(model, tokenizer, conditions: list[dict], pairs: list[dict], all_layers: bool) -> dict:
    """{condition: {layer: latent SOO}} on held-out pairs at the trained layers (or every layer);
    {} when no layer is known (no adapter and not all layers)."""
    soo_args = trained_soo_args(conditions)
    layers = None if all_layers else soo_args.get("soo_layers")
    if layers is None and not all_layers:
        return {}
    latent = {}
    for condition in conditions:
        with active_condition(model, condition):
            latent[condition["name"]] = latent_soo_by_layer(
                model,
                tokenizer,
                pairs,
                layers=layers,
                module_path=soo_args.get("soo_module", "self_attn.o_proj"),
                token_mode=soo_args.get("soo_token_mode", "full"),
            )
    return latent


def measure_capability(model, tokenizer, conditions: list[dict]) -> dict:
    """Per adapter: KL to the base model on neutral prompts, and base vs tuned perplexity."""
    neutral = load_neutral_prompts()
    capability = {}
    for condition in conditions[1:]:
        with active_condition(model, condition):
            capability[condition["name"]] = {
                "kl_to_base": kl_to_base(model, tokenizer, neutral),
                "perplexity": base_and_tuned_perplexity(model, tokenizer),
            }
    return capability


def export_mt_bench_answers(model, tokenizer, conditions: list[dict], out_dir: Path) -> None:
    """mt_bench_answers_CONDITION.jsonl per condition, for an external judge."""
    for condition in conditions:
        with active_condition(model, condition):
            export_mt_bench_style_answers(
                model, tokenizer, out_dir / f"mt_bench_answers_{condition['name']}.jsonl", condition["name"]
            )


def assemble_results(
    config: EvalConfig,
    setup: EvalSetup,
    conditions: list[dict],
    decoding: DecodingConfig,
    forced_rows: list[dict],
    rows: list[dict],
    pairs: list[dict],
    latent: dict,
    capability: dict,
) -> dict:
    """results.json: the run's settings, the forced-choice summary, the generation rates (per condition
    and across seeds), latent SOO and capability."""
    summary = summarize_labels(rows)
    return {
        "config": asdict(config),
        "model_path": setup.model_path,
        "answer_suffix": setup.answer_suffix,
        "protocol": config.protocol,
        "forced_choice": {
            "answer_prefix": setup.answer_prefix,
            "summary": summarize_forced_choice(forced_rows),
            "agreement_with_generation": generation_agreement(forced_rows, rows),
        }
        if forced_rows
        else None,
        "decoding": decoding.key_fields(),
        "conditions": conditions,
        "rates": summary,
        "rates_across_seeds": aggregate_seeds(summary),
        "latent_soo": {
            name: {str(layer): values for layer, values in by_layer.items()} for name, by_layer in latent.items()
        },
        "latent_pairs": len(pairs),
        "trained_layers": trained_soo_args(conditions).get("soo_layers"),
        "capability": capability,
    }


def run_evaluation(config: EvalConfig) -> dict:
    """Evaluate the base model and every adapter; write the report to config.out_dir; return results."""
    setup = prepare_run(config)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, conditions = load_conditions(setup, config.adapters)

    forced_rows = []
    if config.protocol in ("forced_choice", "both"):
        forced_rows = score_forced_choice(
            model, tokenizer, conditions, setup.prompts, setup.answer_prefix, config.batch_size
        )
        write_jsonl_atomic(out_dir / "forced_choice.jsonl", forced_rows)
    decoding = DecodingConfig(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    rows = []
    if config.protocol in ("generation", "both"):
        rows = generate_and_label(
            model,
            tokenizer,
            conditions,
            setup.prompts,
            decoding,
            GenerationCache(out_dir / "generations.jsonl"),
            setup.model_path,
        )
    pairs = heldout_pairs(config)
    latent = measure_latent_soo(model, tokenizer, conditions, pairs, config.latent_all_layers)
    capability = measure_capability(model, tokenizer, conditions) if config.capability else {}
    if config.mt_bench_export:
        export_mt_bench_answers(model, tokenizer, conditions, out_dir)

    results = assemble_results(config, setup, conditions, decoding, forced_rows, rows, pairs, latent, capability)
    if rows:
        write_jsonl_atomic(out_dir / "responses.jsonl", rows)
    write_report(results, out_dir)
    return results
