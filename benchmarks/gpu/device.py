"""GPU probes for the GPU check: synchronise and free memory, the datasheet's and a measured bf16
peak, library versions, nvidia-smi's line."""

from __future__ import annotations

import gc
import platform
import shutil
import subprocess
import time

import torch

# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' datasheets (SXM parts unless named);
# the first name that occurs in torch's device name wins.
DATASHEET_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def datasheet_peak_tflops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "none (CPU)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in name:
            return tflops, f"{tflops:.0f} TFLOP/s ({key} datasheet, dense bf16)"
    return None, f"unknown for {name}"


def measured_matmul_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """bf16 size^3 matmul on random data: mean of `repeats` products after 3 warm-ups."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch)": str(torch.version.cuda),
    }
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "tokenizers", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def nvidia_smi_line() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error}"
    return result.stdout.strip().replace("\n", "; ") or result.stderr.strip()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
