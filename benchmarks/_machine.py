"""What the benchmarks measure about the machine they run on: its description, its load, the CPU
share other processes take during a pass, and its fp32 matmul rate (the reference for FLOP/s).

Shared by every benchmark; imports no other benchmark module, so none of them import each other
for these.
"""

from __future__ import annotations

import os
import platform
import time

import torch


def machine_info() -> dict:
    import transformers

    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu_model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall time, busy CPU seconds of the whole machine incl. hypervisor steal, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.perf_counter(), busy, own.user + own.system


def others_cpu_share(before, after) -> float:
    """Share of all CPUs used by other processes (or stolen by the hypervisor) between two snapshots:
    on a shared machine this is what slows a pass down (OpenMP threads that lose their core stall)."""
    if before is None or after is None or after[0] <= before[0]:
        return float("nan")
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, others / ((after[0] - before[0]) * (os.cpu_count() or 1)))


def matmul_flops_per_second(size: int, repeats: int) -> list[float]:
    """FLOP/s of `repeats` fp32 size x size matmuls (2 n^3 each) after one warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - started))
    return rates
