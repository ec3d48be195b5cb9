"""Describe the machine a benchmark ran on (CPU model, cores, memory, GPU if any)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model, cores, RAM and the GPU if torch sees one: stored with every benchmark."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    gpu = ""
    import torch

    if torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}, {os.cpu_count()} cores{mem}{gpu}"
