"""Model loading: the embedded default, offline errors, QLoRA guard, fp16 warning, tiny models."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

from soo.core import modeling
from soo.core.capture import find_decoder_layers
from soo.tools.tiny_model import ARCHITECTURES, TINY_NUM_LAYERS, write_tiny_model


def test_embedded_default_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOO_CACHE_DIR", str(tmp_path))
    path = modeling.resolve_model_path(None)
    assert (tmp_path / modeling.EMBEDDED_CACHE_NAME / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directory left behind"

    started = time.perf_counter()
    assert modeling.resolve_model_path("embedded") == path
    assert time.perf_counter() - started < 1.0, "a second call must reuse the cache, not convert again"

    model = modeling.load_model(path)
    tokenizer = modeling.load_tokenizer(path)
    assert type(model).__name__ == "LlamaForCausalLM" and len(find_decoder_layers(model)[1]) == 30
    assert model.config.hidden_size == 576 and 130e6 < model.num_parameters() < 140e6
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    # A real instruct model: the answer to a trivial prompt is not noise.
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def test_unknown_hub_model_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(modeling.ModelLoadError, match=r"not in the Hugging Face cache.*hf download nobody/none"):
        modeling.load_config("nobody/none")


def test_missing_local_directory(tmp_path):
    with pytest.raises(modeling.ModelLoadError, match="does not exist"):
        modeling.resolve_model_path(str(tmp_path / "missing"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_qlora_without_gpu_is_refused(tiny_model_dir):
    with pytest.raises(modeling.ModelLoadError, match="CUDA GPU"):
        modeling.load_model(str(tiny_model_dir), load_in_4bit=True)


def test_fp16_warning_only_for_gemma():
    with pytest.warns(UserWarning, match="overflow"):
        modeling.warn_if_fp16_unsafe("gemma2", fp16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        modeling.warn_if_fp16_unsafe("llama", fp16=True)
        modeling.warn_if_fp16_unsafe("gemma3", fp16=False)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_directory_loads_like_a_checkpoint(arch, tmp_path):
    path = write_tiny_model(tmp_path / arch, arch=arch)
    model = modeling.load_model(str(path))
    tokenizer = modeling.load_tokenizer(str(path))
    expected_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    assert model.config.model_type == expected_type
    assert len(find_decoder_layers(model)[1]) == TINY_NUM_LAYERS
    if arch == "gemma2":
        assert model.config._attn_implementation == "eager"
    encoded = tokenizer("Bob has the goal of stealing the golden clock.")["input_ids"]
    assert tokenizer.unk_token_id not in encoded and len(encoded) < 30


def test_single_regex_target_limits_lora_to_matching_modules(make_model):
    model = modeling.add_lora(
        make_model("gemma3"), r=2, alpha=4, dropout=0.0, target_modules=[r".*layers\.1\.self_attn\.(q_proj|v_proj)"]
    )
    wrapped = sorted({name.split(".lora_")[0] for name, _ in model.named_parameters() if "lora_" in name})
    assert wrapped == [
        "base_model.model.model.layers.1.self_attn.q_proj",
        "base_model.model.model.layers.1.self_attn.v_proj",
    ]


def test_evaluation_puts_the_model_on_the_gpus_when_there_are_any(monkeypatch, tiny_model_dir):
    """evaluate.py loads with device_map="auto" where CUDA is visible (it used to score on the CPU
    of a GPU node), and with from_pretrained's default (CPU) elsewhere."""
    from soo.eval import engine
    from soo.eval.config import EvalConfig

    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: True)
    assert modeling.inference_device_map() == "auto"
    seen = {}

    class Stop(Exception):
        pass

    def fake_load_model(path, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(engine, "load_model", fake_load_model)  # the name the engine calls
    with pytest.raises(Stop):
        engine.run_evaluation(
            EvalConfig(
                model_name_or_path=str(tiny_model_dir),
                scenarios=["main"],
                n=1,
                protocol="forced_choice",
                out_dir=str(tiny_model_dir.parent / "eval"),
            )
        )
    assert seen == {"device_map": "auto"}
    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: False)
    assert modeling.inference_device_map() is None


@pytest.mark.parametrize(
    ("cuda", "native_bf16", "expected"),
    [(False, False, "float32"), (True, False, "float16"), (True, True, "bfloat16")],
    ids=["cpu", "v100", "ampere"],
)
def test_accelerator_dtype_is_fp16_where_bf16_is_only_emulated(monkeypatch, cuda, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    # A V100 answers True when emulation counts (torch's default), False natively.
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native_bf16
    )
    assert modeling.accelerator_dtype() == expected
