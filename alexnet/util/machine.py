"""One line describing the machine a measurement ran on (benchmarks and `alexnet compare` state it next to
their numbers: on a shared machine, other people's work slows every side of a measurement)."""
from __future__ import annotations

import os
import platform

import torch
import torchvision

from alexnet.util import memory


def load_average() -> str:
    """The 1/5/15-minute load: on a shared machine, other people's work slows every side of a benchmark."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = ""
    if torch.cuda.is_available():   # the GPUs a measurement may have run on, by name
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = ", " + ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names)) + f" (CUDA {torch.version.cuda})"
    return (f"{cpu}, {os.cpu_count()} logical CPUs ({usable_cpus()} usable), torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}), torchvision {torchvision.__version__}, "
            f"{torch.get_num_threads()} torch threads, python {platform.python_version()}, "
            f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}, {memory.mode()}{gpus}")
