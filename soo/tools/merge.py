"""Merge a saved LoRA adapter into its base model, in one process (after a ZeRO-3 run).

Under ZeRO-3 every process holds a slice of the weights, so `--merge_adapter` cannot merge in the
training job. Run this afterwards on a machine with enough CPU RAM for the whole model in the
chosen dtype (Gemma-2-27B in bf16: ~55 GB):

  python -m soo.tools.merge outputs/gemma-2-27b-it-soo                       # -> outputs/gemma-2-27b-it-soo/merged
  python -m soo.tools.merge outputs/gemma-2-27b-it-soo --out /scratch/merged --dtype bfloat16

The base model is the one recorded in the run's soo_run_config.json (or --model_name_or_path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def merge_adapter(adapter_dir: str, out_dir: str | None = None, model_name_or_path: str | None = None,
                  dtype: str = "auto") -> Path:
    from peft import PeftModel

    from soo.core.io import read_run_config
    from soo.core.modeling import ModelLoadError, load_model, load_tokenizer, resolve_model_path

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter_dir} has no adapter_config.json: not a saved adapter.")
    run_config = read_run_config(adapter_dir)
    model_path = resolve_model_path(model_name_or_path or run_config.get("model_path"))
    model_args = run_config.get("model_args", {})
    model = load_model(model_path, dtype=dtype, attn_implementation=model_args.get("attn_implementation"))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    target = Path(out_dir) if out_dir else Path(adapter_dir) / "merged"
    merged.save_pretrained(target)
    load_tokenizer(model_path).save_pretrained(target)
    return target


def main(argv=None) -> int:
    from soo.core.modeling import ModelLoadError

    parser = argparse.ArgumentParser(description="Merge a saved SOO LoRA adapter into its base model.")
    parser.add_argument("adapter_dir", help="output directory of finetuning.py (adapter_model.safetensors inside)")
    parser.add_argument("--out", default=None, help="where to save the merged model (default: ADAPTER_DIR/merged)")
    parser.add_argument("--model_name_or_path", default=None, help="base model (default: from soo_run_config.json)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default: the checkpoint's)")
    args = parser.parse_args(argv)
    try:
        target = merge_adapter(args.adapter_dir, args.out, args.model_name_or_path, args.dtype)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Merged model saved to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
