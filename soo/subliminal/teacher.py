"""The teacher writes number sequences: `subliminal.py generate`.

    python subliminal.py generate --animal owl --n_prompts 30000 --output_file outputs/subliminal/owl/raw.jsonl

Teacher = a model (default: the embedded SmolLM2-135M-Instruct), an optional system prompt
(`--animal owl` fills in the published trait prompt) and an optional LoRA adapter or merged
model. Prompts come from `soo.subliminal.numbers` (seeded); answers are sampled at
`--temperature` (the paper's 1.0) by the evaluation engine's batched generation (shared prefix
run once, `soo.eval.generation`).

Resumable and reproducible: prompts are cut into fixed chunks of `batch_size`; chunk i is
sampled after `torch.manual_seed(seed * 1_000_003 + i)` and appended to the output with fsync, so
a killed run keeps every finished chunk and a rerun of the same command continues where it
stopped, with the same answers an uninterrupted run gives on the same machine. The settings sit
in a sidecar `<output>.teacher.json`; a rerun with other settings is refused.

Optional backend `vllm` (GPU, when vLLM is installed): the same prompts, records and sidecar,
sampled by vLLM with a per-request seed; not exercised by the tests (no GPU in CI).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.core.io import write_json_atomic, write_jsonl_atomic
from soo.subliminal.animals import trait_system_prompt
from soo.subliminal.numbers import number_prompts
from soo.subliminal.records import make_record, read_records

BACKENDS = ("hf", "vllm")
SEED_STRIDE = 1_000_003  # chunk seeds of different --seed values never collide below a million chunks


@dataclass
class TeacherConfig:
    """What a teacher generates with; `subliminal.py generate`'s flags are its fields."""

    output_file: str = field(metadata={"help": "raw prompt/completion JSONL (appended; resumable)"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "teacher model or merged folder (default: the embedded SmolLM2-135M)"}
    )
    adapter: str | None = field(default=None, metadata={"help": "a LoRA adapter on the teacher model"})
    animal: str | None = field(
        default=None, metadata={"help": "the trait: the published 'You love {animal}s ...' system prompt"}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "any other system prompt (not with --animal)"})
    n_prompts: int = field(default=30000, metadata={"help": "number prompts to answer"})
    seed: int = field(default=0, metadata={"help": "prompts and sampling"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (the paper's 1.0)"})
    max_new_tokens: int = field(
        default=64,
        metadata={"help": "room for any valid answer: 10 three-digit numbers take 48-51 tokens (one per digit)"},
    )
    batch_size: int = field(default=48, metadata={"help": "prompts per chunk (fixes the sampling: keep it on resume)"})
    backend: str = field(default="hf", metadata={"choices": BACKENDS, "help": "hf (CPU/GPU) or vllm (GPU)"})

    def __post_init__(self):
        for name in ("n_prompts", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0 (sampling), got {self.temperature}")
        if self.animal is not None and self.system_prompt is not None:
            raise ValueError("--animal sets the system prompt; pass one of --animal and --system_prompt")
        if self.animal is not None and not self.animal.strip().isalpha():
            raise ValueError(f"--animal must be one word of letters, got {self.animal!r}")

    @property
    def teacher_system_prompt(self) -> str | None:
        return trait_system_prompt(self.animal.strip().lower()) if self.animal else self.system_prompt

    def record(self) -> dict:
        """What fixes the answers (the sidecar); n_prompts may grow on a rerun."""
        settings = asdict(self)
        for name in ("output_file", "n_prompts"):
            settings.pop(name)
        settings["system_prompt"] = self.teacher_system_prompt
        return settings


def sidecar_path(output_file: str | Path) -> Path:
    return Path(f"{output_file}.teacher.json")


def finished_records(config: TeacherConfig) -> list[dict]:
    """The records already written by this teacher, cut back to whole chunks; refuses a file
    written with other settings."""
    output, sidecar = Path(config.output_file), sidecar_path(config.output_file)
    if not output.exists():
        return []
    if sidecar.is_file():
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        differing = [key for key in recorded if recorded[key] != config.record().get(key)]
        if differing:
            raise ValueError(
                f"{output} was generated with other settings ({', '.join(differing)}); "
                "use a new --output_file or delete it"
            )
    elif output.stat().st_size:
        raise ValueError(
            f"{output} exists without its {sidecar.name}: not this teacher's output; use a new --output_file"
        )
    records = read_records(output, allow_torn_last_line=True)
    if [record.get("index") for record in records] != list(range(len(records))):
        raise ValueError(f"{output}: records out of order (not written by generate); use a new --output_file")
    whole = len(records) - len(records) % config.batch_size
    return records[:whole]


def _holds_exactly(path: Path, records: list[dict]) -> bool:
    """Does the file hold these records and nothing else (no partial chunk, no torn last line)?"""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) == len(records) and (not lines or text.endswith("\n"))


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def _hf_sampler(config: TeacherConfig, model_path: str):
    import torch

    from soo.core.modeling import accelerator_dtype, inference_device_map, load_model, load_tokenizer
    from soo.eval.generation import DecodingConfig, generate_batched

    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=accelerator_dtype(), device_map=inference_device_map())
    if config.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.adapter)
    model.eval()
    decoding = DecodingConfig(
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        system_prompt=config.teacher_system_prompt,
        temperature=config.temperature,
    )

    def sample(prompts: list[str], chunk: int) -> tuple[list[str], list[bool]]:
        torch.manual_seed(config.seed * SEED_STRIDE + chunk)
        return generate_batched(model, tokenizer, prompts, decoding, progress=False, return_ended=True)

    return sample


def _vllm_sampler(config: TeacherConfig, model_path: str):
    try:
        import torch
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ValueError(f"--backend vllm needs vLLM installed ({error})") from None
    if not torch.cuda.is_available():
        raise ValueError("--backend vllm needs a GPU; use --backend hf on CPU")
    llm = LLM(model=model_path, enable_lora=bool(config.adapter), seed=config.seed)
    lora = None
    if config.adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("teacher", 1, config.adapter)
    system = config.teacher_system_prompt

    def sample(prompts: list[str], chunk: int) -> tuple[list[str], list[bool]]:
        conversations = [
            ([{"role": "system", "content": system}] if system is not None else [])
            + [{"role": "user", "content": prompt}]
            for prompt in prompts
        ]
        params = [
            SamplingParams(
                temperature=config.temperature,
                max_tokens=config.max_new_tokens,
                seed=config.seed * SEED_STRIDE + chunk * config.batch_size + offset,
            )
            for offset in range(len(prompts))
        ]
        outputs = llm.chat(conversations, params, lora_request=lora, use_tqdm=False)
        return (
            [output.outputs[0].text.strip() for output in outputs],
            [output.outputs[0].finish_reason != "length" for output in outputs],
        )

    return sample


def generate_numbers(config: TeacherConfig, progress: bool = True, log=print) -> dict:
    """Answer `n_prompts` number prompts with the teacher; returns counts and throughput."""
    import time

    from tqdm.auto import tqdm

    from soo.core.modeling import resolve_model_path
    from soo.eval.engine import check_adapter_base

    model_path = resolve_model_path(config.model_name_or_path)
    if config.adapter:
        check_adapter_base(config.adapter, model_path)
    records = finished_records(config)
    output = Path(config.output_file)
    if not _holds_exactly(output, records):
        # Drop a partial chunk (it is sampled again whole) and a killed writer's torn last line,
        # which the next append would otherwise run into.
        write_jsonl_atomic(output, records)
    prompts = number_prompts(config.n_prompts, config.seed)
    done = len(records)
    if done >= config.n_prompts:
        log(f"{output}: all {config.n_prompts} prompts already answered")
        return {"records": done, "new": 0, "seconds": 0.0, "prompts_per_second": None}
    if done:
        log(f"{output}: resuming after {done} answered prompts")
    write_json_atomic(sidecar_path(output), config.record())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.touch()
    sample = (_vllm_sampler if config.backend == "vllm" else _hf_sampler)(config, model_path)
    start = time.perf_counter()
    with tqdm(total=config.n_prompts, initial=done, disable=not progress, desc="teacher", unit="prompt") as bar:
        for first in range(done, config.n_prompts, config.batch_size):
            chunk_prompts = prompts[first : first + config.batch_size]
            answers, ended = sample(chunk_prompts, first // config.batch_size)
            _append(
                output,
                [
                    make_record(first + i, prompt, answer, truncated=not row_ended)
                    for i, (prompt, answer, row_ended) in enumerate(zip(chunk_prompts, answers, ended))
                ],
            )
            bar.update(len(chunk_prompts))
    seconds = time.perf_counter() - start
    new = config.n_prompts - done
    return {"records": config.n_prompts, "new": new, "seconds": seconds, "prompts_per_second": new / seconds}
