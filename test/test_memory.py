"""soo.tools.memory (and its memory_model, memory_estimate): exact parameter counts, ZeRO partitioning,
offload, DeepSpeed parity, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soo.core.modeling import add_lora, peft_target_modules
from soo.tools import memory, memory_model
from soo.tools.memory import plan_memory
from soo.tools.memory_model import MemoryPlanError, build_meta_model, count_parameters
from soo.tools.tiny_model import build_tiny_model, tiny_config

REPO = Path(__file__).resolve().parents[1]
GEMMA2_CONFIG = REPO / "configs" / "gemma-2-27b-it.yaml"
VOCAB = 1024


def _write_yaml(path: Path, **values) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_config_yaml(tmp_path_factory):
    """A configs/*.yaml-style file whose model is a tiny Llama config directory (no weights)."""
    folder = tmp_path_factory.mktemp("tiny-memory")
    tiny_config("llama", VOCAB).save_pretrained(folder / "model")
    return _write_yaml(
        folder / "tiny.yaml",
        model_name_or_path=str(folder / "model"),
        dtype="bfloat16",
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
        per_device_train_batch_size=2,
        activation_checkpointing=True,
        max_length=64,
    )


def _component(stage_plan: dict, key: str) -> dict:
    return next(c for c in stage_plan["lora"]["components"] if c["key"] == key)


def _stage(plan: dict, stage: int) -> dict:
    return next(s for s in plan["stages"] if s["stage"] == stage)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3"])
def test_meta_counts_equal_a_real_model_and_deepspeeds_own_count(arch):
    from deepspeed.runtime.zero.stage3 import model_to_params

    real = build_tiny_model(arch, vocab_size=VOCAB)
    counts = count_parameters(build_meta_model(tiny_config(arch, VOCAB)), 4, ["q_proj", "v_proj"])
    assert counts.total_params == sum(p.numel() for p in real.parameters())
    # DeepSpeed's helper needs real storage (it dedups tied weights by data_ptr): same answer.
    assert (counts.total_params, counts.largest_layer_params) == model_to_params(real)
    assert counts.largest_layer_name.endswith("embed_tokens")


@pytest.mark.parametrize(
    "arch, r, targets",
    [
        ("llama", 4, ["q_proj", "v_proj"]),
        ("gemma2", 8, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("llama", 2, [r".*layers\.[01]\..*\.(q_proj|v_proj)"]),  # a regex, as in configs/gemma-3-4b-it.yaml
    ],
)
def test_lora_count_equals_peft_on_the_real_model(arch, r, targets):
    counts = count_parameters(build_meta_model(tiny_config(arch, VOCAB)), r, targets)
    peft_model = add_lora(
        build_tiny_model(arch, vocab_size=VOCAB), r=r, alpha=2 * r, dropout=0.1, target_modules=targets
    )
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert counts.lora_params == trainable


def test_one_regex_entry_is_a_pattern_and_names_are_a_list():
    # The rule add_lora and the planner's counts share: peft gets a str (regex over full names) or a list.
    assert peft_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert peft_target_modules(name for name in ["q_proj"]) == ["q_proj"]
    assert peft_target_modules([r".*layers\.[01]\..*\.(q_proj|v_proj)"]) == r".*layers\.[01]\..*\.(q_proj|v_proj)"
    assert peft_target_modules(["q_proj", "v_proj|o_proj"]) == ["q_proj", "v_proj|o_proj"]  # two entries: names


def test_bundled_architectures_have_the_published_sizes():
    expected = {
        "google/gemma-2-27b-it": 27_227_128_320,
        "google/gemma-2-2b-it": 2_614_341_888,
        "google/gemma-3-4b-it": 4_300_079_472,
        "meta-llama/Llama-3.2-1B-Instruct": 1_235_814_400,
        "mistralai/Mistral-7B-Instruct-v0.2": 7_241_732_096,
        "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
        memory_model.EMBEDDED_ARCHITECTURE: 134_515_008,
    }
    assert sorted(expected) == memory_model.bundled_hub_ids()
    # The smaller ones are built here; Gemma-2-27B's count is checked through the CLI below.
    for hub_id in (
        "google/gemma-2-2b-it",
        "meta-llama/Llama-3.2-1B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "Qwen/Qwen2.5-7B-Instruct",
        memory_model.EMBEDDED_ARCHITECTURE,
    ):
        config = memory_model.load_bundled_config(memory_model.bundled_config_path(hub_id))
        assert sum(p.numel() for p in build_meta_model(config).parameters()) == expected[hub_id]


def test_embedded_default_resolves_without_network():
    plan = plan_memory(REPO / "configs" / "smollm2-135m-instruct.yaml", gpus=1, nodes=1, stage=2)
    assert plan["model"]["total_params"] == 134_515_008
    assert plan["setup"]["dtype"] == "float32"  # soo.core.modeling converts the embedded model to fp32
    assert plan["model"]["lora_params"] == 30 * 8 * ((576 + 576) + (576 + 192))  # r=8 on q_proj, v_proj


def test_zero3_partitions_base_weights_and_zero2_does_not(tiny_config_yaml):
    one = plan_memory(tiny_config_yaml, gpus=1, nodes=1)
    eight = plan_memory(tiny_config_yaml, gpus=4, nodes=2)
    total_bytes = one["model"]["total_params"] * 2  # bf16
    z3_one = _component(_stage(one, 3), "base_weights")["bytes_per_gpu"]
    z3_eight = _component(_stage(eight, 3), "base_weights")["bytes_per_gpu"]
    assert z3_one == total_bytes
    assert z3_eight == pytest.approx(total_bytes / 8, abs=1)
    # Per node: the 4 GPUs of a node hold half of the model between them.
    assert _component(_stage(eight, 3), "base_weights")["bytes_per_node"] == pytest.approx(total_bytes / 2, abs=4)
    for plan in (one, eight):
        assert _component(_stage(plan, 2), "base_weights")["bytes_per_gpu"] == total_bytes
    # Optimizer state is partitioned by both stages.
    assert _component(_stage(eight, 2), "lora_optimizer")["bytes_per_gpu"] == pytest.approx(
        _component(_stage(one, 2), "lora_optimizer")["bytes_per_gpu"] / 8, abs=1
    )


@pytest.mark.parametrize(
    "offload, moved",
    [("optimizer", {"lora_optimizer"}), ("optimizer+params", {"lora_optimizer", "base_weights", "lora_weights_grads"})],
)
def test_offload_moves_bytes_from_gpu_to_cpu(tiny_config_yaml, offload, moved):
    kept = _stage(plan_memory(tiny_config_yaml, gpus=4, nodes=1, stage=3), 3)
    offloaded = _stage(plan_memory(tiny_config_yaml, gpus=4, nodes=1, stage=3, offload=offload), 3)
    moved_per_gpu = sum(_component(kept, key)["bytes_per_gpu"] for key in moved)
    moved_per_node = sum(_component(kept, key)["bytes_per_node"] for key in moved)
    assert moved_per_gpu > 0
    assert {c["key"] for c in offloaded["lora"]["components"] if c["where"] == "cpu"} == moved | {"host_processes"}
    assert kept["lora"]["gpu_bytes_per_gpu"] - offloaded["lora"]["gpu_bytes_per_gpu"] == moved_per_gpu
    assert offloaded["lora"]["cpu_bytes_per_node"] - kept["lora"]["cpu_bytes_per_node"] == moved_per_node


def test_zero2_cannot_offload_parameters(tiny_config_yaml):
    with pytest.raises(MemoryPlanError, match="ZeRO-2 cannot offload parameters"):
        plan_memory(tiny_config_yaml, gpus=4, nodes=1, stage=2, offload="optimizer+params")
    plan = plan_memory(tiny_config_yaml, gpus=4, nodes=1, stage="both", offload="optimizer+params")
    assert _stage(plan, 2)["offload"] == "optimizer" and _stage(plan, 3)["offload"] == "optimizer+params"


@pytest.mark.parametrize("offload", memory.OFFLOAD_MODES)
def test_deepspeed_figures_equal_calling_deepspeed(tiny_config_yaml, offload):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    plan = plan_memory(tiny_config_yaml, gpus=4, nodes=2, offload=offload)
    total, largest = plan["model"]["total_params"], plan["model"]["largest_layer_params"]
    cpu3, gpu3, _ = estimate_zero3_model_states_mem_needs(
        total,
        largest,
        num_gpus_per_node=4,
        num_nodes=2,
        cpu_offload=offload != "none",
        cpu_offload_params=offload == "optimizer+params",
        zero_init=True,
    )
    cpu2, gpu2 = estimate_zero2_model_states_mem_needs(
        total, num_gpus_per_node=4, num_nodes=2, cpu_offload=offload != "none"
    )
    full3, full2 = _stage(plan, 3)["deepspeed_full_finetune"], _stage(plan, 2)["deepspeed_full_finetune"]
    assert (full3["gpu_bytes_per_gpu"], full3["cpu_bytes_per_node"]) == (gpu3, cpu3)
    assert (full2["gpu_bytes_per_gpu"], full2["cpu_bytes_per_node"]) == (gpu2, cpu2)


def test_activation_checkpointing_and_batch_change_the_activation_terms(tiny_config_yaml):
    base = _stage(plan_memory(tiny_config_yaml, gpus=1, nodes=1, stage=3), 3)
    doubled = _stage(plan_memory(tiny_config_yaml, gpus=1, nodes=1, stage=3, micro_batch=4), 3)
    for key in ("activations_stored", "activations_working", "logits"):
        assert _component(doubled, key)["bytes_per_gpu"] == 2 * _component(base, key)["bytes_per_gpu"]
    # 2 pairs = 4 rows (self + other) x 64 tokens x vocab x (fp32 log-softmax + 2 fp32 grads + a bf16 copy)
    assert _component(base, "logits")["bytes_per_gpu"] == 4 * 64 * VOCAB * (12 + 2)


def test_cli_gemma2_27b_on_one_puhti_node(capsys):
    assert memory.main([str(GEMMA2_CONFIG), "--gpus", "4", "--nodes", "1"]) == 0
    out = capsys.readouterr().out
    verdicts = re.findall(r"^fits: (yes|no) \(([\d.]+) of 32 GiB per GPU", out, flags=re.MULTILINE)
    assert len(verdicts) == 2  # ZeRO-2 then ZeRO-3
    (fits2, gib2), (fits3, gib3) = verdicts
    assert fits2 == "no" and float(gib2) > 50  # a whole bf16 27B copy per GPU
    assert fits3 == "yes" and float(gib3) < float(gib2)
    assert "27,227,128,320 params" in out
    assert "DeepSpeed's estimate for FULL fine-tuning" in out


def test_cli_json_as_a_module():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "soo.tools.memory",
            str(GEMMA2_CONFIG),
            "--gpus",
            "4",
            "--nodes",
            "1",
            "--stage",
            "3",
            "--offload",
            "optimizer",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)  # DeepSpeed's import-time log must not reach stdout
    (stage,) = plan["stages"]
    assert stage["stage"] == 3 and stage["offload"] == "optimizer"
    assert plan["model"]["total_params"] == 27_227_128_320
    assert plan["model"]["lora_params"] == 46 * 4 * ((4608 + 4096) + (4608 + 2048))
    assert isinstance(stage["lora"]["fits"], bool)


def test_unknown_stage_is_a_clear_error(tiny_config_yaml, capsys):
    with pytest.raises(MemoryPlanError, match="Unknown ZeRO stage '4'"):
        plan_memory(tiny_config_yaml, gpus=4, nodes=1, stage=4)
    with pytest.raises(SystemExit) as raised:
        memory.main([str(tiny_config_yaml), "--gpus", "4", "--nodes", "1", "--stage", "4"])
    assert raised.value.code == 2
    assert "invalid choice: '4'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gpus", "-1", "--nodes", "1"], "--gpus: must be at least 1, got -1"),
        (["--gpus", "4", "--nodes", "0"], "--nodes: must be at least 1, got 0"),
        (["--gpus", "4", "--nodes", "1", "--seq_len", "0"], "--seq_len: must be at least 1"),
        (["--gpus", "4", "--nodes", "1", "--micro_batch", "-2"], "--micro_batch: must be at least 1"),
        (["--gpus", "4", "--nodes", "1", "--gpu_memory_gib", "-3"], "--gpu_memory_gib: must be above 0, got -3"),
        (["--gpus", "4", "--nodes", "1", "--node_ram_gib", "0"], "--node_ram_gib: must be above 0"),
        (
            ["--gpus", "4", "--nodes", "1", "--overhead_gib", "nan"],
            "--overhead_gib: expected a finite number, got 'nan'",
        ),
    ],
)
def test_impossible_sizes_are_refused(tiny_config_yaml, capsys, flags, message):
    with pytest.raises(SystemExit) as raised:
        memory.main([str(tiny_config_yaml), *flags])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("model", ["no-such-org/no-such-model-xyz", "/no/such/model/dir"])
def test_unresolvable_model_is_a_clear_error(tmp_path, capsys, model):
    config = _write_yaml(tmp_path / "bad.yaml", model_name_or_path=model, lora_r=4)
    with pytest.raises(MemoryPlanError, match=f"Cannot resolve the architecture of '{re.escape(model)}'"):
        plan_memory(config, gpus=1, nodes=1)
    assert memory.main([str(config), "--gpus", "1", "--nodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot resolve") and "config.json" in err


def test_missing_deepspeed_is_a_clear_error(tiny_config_yaml, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed.runtime.zero.stage3", None)  # import now fails
    with pytest.raises(MemoryPlanError, match="pip install deepspeed"):
        plan_memory(tiny_config_yaml, gpus=1, nodes=1, stage=3)


def test_lora_targets_that_match_nothing_are_an_error():
    with pytest.raises(MemoryPlanError, match="match no module"):
        count_parameters(build_meta_model(tiny_config("llama", VOCAB)), 4, ["no_such_proj"])


def test_meta_model_uses_no_memory():
    model = build_meta_model(tiny_config("llama", VOCAB))
    assert all(p.device == torch.device("meta") for p in model.parameters())


def test_four_bit_plan_counts_the_unquantized_weights_as_peft_leaves_them():
    """QLoRA: peft's k-bit preparation casts every weight it does not hold in 4 bits to fp32; the plan
    must count those bytes (measured on an H200: 1.07x the old 16-bit count, docs/benchmarks/gpu.md)."""
    from peft import prepare_model_for_kbit_training

    from soo.tools.memory_estimate import NF4_BYTES_PER_PARAM, base_weight_bytes

    model = build_tiny_model("llama", vocab_size=VOCAB).to(torch.bfloat16)
    counts = count_parameters(model, 8, ["q_proj", "v_proj"])
    output_layer = model.get_output_embeddings()
    quantized = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output_layer}
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # Without bitsandbytes nothing here is 4-bit, so the Linear weights are skipped: the rest is what counts.
    rest_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in quantized)
    assert rest_bytes == pytest.approx(
        base_weight_bytes(counts, 2, True) - counts.quantizable_params * NF4_BYTES_PER_PARAM
    )
    assert rest_bytes == (counts.total_params - counts.quantizable_params) * 4
