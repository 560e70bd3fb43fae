"""alexnet._memory: large freed CPU tensors are reused instead of page-faulted in afresh every step."""
import subprocess
import sys

import pytest

PROBE = r"""
import resource, alexnet, torch
from alexnet import _memory
def faults_for_a_fresh_100mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(25_000_000)          # 100 MB, written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_for_a_fresh_100mb_tensor()   # the first one may grow the heap
print(_memory.mode(), "|", min(faults_for_a_fresh_100mb_tensor() for _ in range(3)))
"""


def _probe(env_extra: dict[str, str]) -> tuple[str, int]:
    import os
    env = {**os.environ, **env_extra}
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    mode, faults = out.stdout.strip().rsplit("|", 1)
    return mode.strip(), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and page-fault counts are Linux's")
def test_freed_blocks_are_reused_without_page_faults():
    mode, faults = _probe({})
    assert mode == "glibc malloc, freed blocks kept for reuse"
    assert faults < 100            # 100 MB on 4 KiB pages would be ~24,000 faults
    system_mode, system_faults = _probe({"ALEXNET_MALLOC": "system"})
    assert system_mode == "system malloc (ALEXNET_MALLOC=system)"
    assert system_faults > faults  # the opt-out really leaves glibc's behaviour: a fresh mapping each time


def test_import_sets_huge_pages_for_torch():
    import os
    out = subprocess.run([sys.executable, "-c", "import os, alexnet; print(os.environ['THP_MEM_ALLOC_ENABLE'])"],
                         capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"})
    assert out.stdout.strip() == "1"
