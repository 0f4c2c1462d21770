"""What every GPU-check section is handed: the parsed flags, the device, the report (rewritten
after every section, so a run cut short keeps what it measured), the GPU's peaks, a scratch folder."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Report:
    """The markdown report, rewritten whole after every section."""

    path: str
    header: list[str]
    sections: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, title: str, lines: list[str]) -> None:
        self.sections.append("\n".join([f"## {title}", "", *lines, ""]))
        print("\n".join([f"\n## {title}", *lines]), flush=True)
        self.write()

    def write(self) -> None:
        if self.path:
            Path(self.path).write_text("\n".join(self.header + self.sections), encoding="utf-8")


@dataclass
class Check:
    """One run of the GPU check, as its sections see it."""

    args: argparse.Namespace
    device: torch.device
    report: Report
    workdir: str  # removed when the run ends
    peak_tflops: float | None  # the datasheet's dense bf16 peak; None when unknown or on a CPU
    peak_text: str
    matmul_tflops: float | None = None  # measured by the environment section; None until it ran
