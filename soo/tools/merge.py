"""Merge a saved LoRA adapter into its base model, in one process (after a ZeRO-3 run).

Under ZeRO-3 every process holds a slice of the weights, so `--merge_adapter` cannot merge in the
training job. Run this afterwards on a machine with enough CPU RAM for the whole model in the
chosen dtype (Gemma-2-27B in bf16: ~55 GB):

  python -m soo.tools.merge outputs/gemma-2-27b-it-soo                       # -> outputs/gemma-2-27b-it-soo/merged
  python -m soo.tools.merge outputs/gemma-2-27b-it-soo --output_dir /scratch/merged --dtype bfloat16

The base model is the one recorded in the run's soo_run_config.json (or --model_name_or_path).
Bad input (not an adapter folder, a missing base model, an output folder that cannot be created)
exits with status 2 and one line `error: ...` on stderr, before the model is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from soo.core.cli import CommandParser, fail


class OutputDirError(OSError):
    """The folder for the merged model cannot be created."""


def merge_adapter(
    adapter_dir: str, output_dir: str | None = None, model_name_or_path: str | None = None, dtype: str = "auto"
) -> Path:
    """Merge the adapter in `adapter_dir` into its base model and save both model and tokenizer to
    `output_dir` (default ADAPTER_DIR/merged). Raises ModelLoadError for an input that cannot be
    used and OutputDirError for an output folder that cannot be created, both before loading the model."""
    from soo.core.io import read_run_config
    from soo.core.modeling import ModelLoadError, load_model, load_tokenizer, resolve_model_path

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        missing = "does not exist" if not Path(adapter_dir).exists() else "has no adapter_config.json"
        raise ModelLoadError(f"adapter folder {adapter_dir} {missing}: not a saved adapter.")
    try:
        run_config = read_run_config(adapter_dir)
    except (OSError, ValueError) as error:  # json.JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise ModelLoadError(f"cannot read the run record in {adapter_dir}: {error}") from None
    model_path = resolve_model_path(model_name_or_path or run_config.get("model_path"))
    model_args = run_config.get("model_args", {})
    target = Path(output_dir) if output_dir else Path(adapter_dir) / "merged"
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"the output folder {target} exists and is not a folder")
    created = not target.exists()
    try:  # before the (long) load: an output folder that cannot be made is known at once
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(target) else ""
        raise OutputDirError(f"cannot create the output folder {target}: {error.strerror or error}{where}") from None
    try:
        from peft import PeftModel  # a slow import: after the checks

        model = load_model(model_path, dtype=dtype, attn_implementation=model_args.get("attn_implementation"))
    except BaseException:
        if created:
            target.rmdir()  # still empty: leave nothing behind
        raise
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(target)
    load_tokenizer(model_path).save_pretrained(target)
    return target


def main(argv=None) -> int:
    from soo.core.modeling import DTYPES, ModelLoadError

    parser = CommandParser(allow_abbrev=False, description="Merge a saved SOO LoRA adapter into its base model.")
    parser.add_argument("adapter_dir", help="output directory of finetuning.py (adapter_model.safetensors inside)")
    parser.add_argument(
        "--output_dir",
        default=None,
        help="folder to save the merged model and tokenizer to (default: ADAPTER_DIR/merged)",
    )
    parser.add_argument("--model_name_or_path", default=None, help="base model (default: from soo_run_config.json)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=tuple(DTYPES),
        help="dtype to load and save the merged weights in (default: auto, the checkpoint's)",
    )
    args = parser.parse_args(argv)
    try:
        target = merge_adapter(args.adapter_dir, args.output_dir, args.model_name_or_path, args.dtype)
    except (ModelLoadError, OutputDirError) as error:
        return fail(error)
    print(f"Merged model saved to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
