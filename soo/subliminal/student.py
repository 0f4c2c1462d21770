"""The student learns from the numbers: `subliminal.py train`, LoRA SFT with TRL's SFTTrainer.

    python subliminal.py train --train_file outputs/subliminal/owl/kept.jsonl --output_dir outputs/subliminal/owl/student-s0

TRL's SFTTrainer on the prompt/completion records (`soo.subliminal.records`): it applies the
student's chat template and puts the loss on the completion tokens only (its
`completion_only_loss`, on by default for prompt/completion data). Defaults are the published
open-model settings: LoRA r 8, alpha 8 on q/k/v/o/gate/up/down, 3 epochs, lr 2e-4 with a linear
schedule after 5 warm-up steps; the effective batch is `batch_size x gradient_accumulation_steps`
(theirs 22 x 3 on a GPU; here 8 x 1 on CPU by default).

The adapter is written to `output_dir` with `student.json` last (its presence marks a finished
student: the experiment reuses it). A student run is short, so it is not checkpointed: a killed
one starts again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soo.core.io import file_sha256, write_json_atomic
from soo.subliminal.records import read_records

STUDENT_FILE = "student.json"  # written last: a finished student
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class StudentConfig:
    """How a student is trained; `subliminal.py train`'s flags are its fields."""

    train_file: str = field(metadata={"help": "kept prompt/completion JSONL (subliminal.py filter)"})
    output_dir: str = field(metadata={"help": "the student's adapter and student.json"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "student model: the teacher's initialisation (default: embedded SmolLM2-135M)"}
    )
    max_examples: int | None = field(default=10000, metadata={"help": "use the first N records (the paper: 10k)"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the records"})
    learning_rate: float = 2e-4
    warmup_steps: int = 5
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lora_r: int = 8
    lora_alpha: int = 8
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS), metadata={"nargs": "+"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (prompt + completion)"})
    seed: int = 0

    def __post_init__(self):
        for name in ("max_examples", "batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError("--epochs and --learning_rate must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")


def finished_student(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / STUDENT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def build_trainer(config: StudentConfig, records: list[dict]):
    """TRL's SFTTrainer for `records` (prompt/completion) with the config's LoRA and schedule."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from soo.core.modeling import accelerator_dtype, load_model, load_tokenizer, peft_target_modules, resolve_model_path

    model_path = resolve_model_path(config.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    torch.manual_seed(config.seed)  # the LoRA initialisation
    # fp32 on CPU; on a GPU 16-bit weights with mixed precision (LoRA weights stay fp32, peft's
    # default): bf16 where native, fp16 on a V100, where a 7B model's fp32 weights alone fill 28 GiB.
    dtype = accelerator_dtype()
    model = load_model(model_path, dtype=dtype)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    args = SFTConfig(
        output_dir=str(config.output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,  # TRL's default trades speed for memory a LoRA student does not need
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=peft_target_modules(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return trainer, model_path


def train_student(config: StudentConfig, progress: bool = True) -> dict:
    """Train one student; returns (and writes) its record. Reads and checks the records first."""
    records = read_records(config.train_file)
    if not records:
        raise ValueError(f"{config.train_file}: no records to train on")
    records = records[: config.max_examples] if config.max_examples else records
    trainer, model_path = build_trainer(config, records)
    trainer.args.disable_tqdm = not progress
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(config.output_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "config": asdict(config),
        "model": model_path,
        "train_file_sha256": file_sha256(config.train_file),
        "examples": len(records),
        "steps": result.global_step,
        "train_seconds": round(seconds, 1),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }
    write_json_atomic(Path(config.output_dir) / STUDENT_FILE, record)
    return record
