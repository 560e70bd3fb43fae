"""alexnet.util.memory: large freed CPU tensors are reused instead of page-faulted in afresh every step, once a
program opts in (the ``alexnet`` command and the benchmarks do); ``import alexnet`` alone changes nothing."""
import os
import subprocess
import sys

import pytest

PROBE = r"""
import resource, sys
from alexnet.util import memory
if sys.argv[1] == "configure":
    memory.configure()
import torch
def faults_for_a_fresh_100mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(25_000_000)          # 100 MB, written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_for_a_fresh_100mb_tensor()   # the first one may grow the heap
print(memory.mode(), "|", min(faults_for_a_fresh_100mb_tensor() for _ in range(3)))
"""


def _run(code: str, *args: str, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "ALEXNET_MALLOC", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env={**env, **env_extra})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _probe(action: str, **env_extra: str) -> tuple[str, int]:
    mode, faults = _run(PROBE, action, **env_extra).rsplit("|", 1)
    return mode.strip(), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and page-fault counts are Linux's")
def test_freed_blocks_are_reused_without_page_faults():
    mode, faults = _probe("configure")
    assert mode == "glibc malloc, freed blocks kept for reuse"
    # 100 MB afresh on 4 KiB pages is ~24,000 faults; reuse gives almost none (0 on a quiet machine, a few hundred
    # seen once under a loaded CI run), so a tenth of a fresh mapping is the line
    assert faults < 2_400
    system_mode, system_faults = _probe("configure", ALEXNET_MALLOC="system")
    assert system_mode == "system malloc (ALEXNET_MALLOC=system)"
    assert system_faults > faults  # the opt-out really leaves glibc's behaviour: a fresh mapping each time
    plain_mode, plain_faults = _probe("import only")
    assert plain_mode == "not configured"
    assert plain_faults > faults   # without configure() (import alexnet alone) glibc's behaviour is untouched


def test_configure_sets_huge_pages_for_torch():
    code = "import os; from alexnet.util import memory; memory.configure(); print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    assert _run(code) == "1"


def test_import_alexnet_changes_nothing_in_the_process():
    """No memory settings, no torch import, no matplotlib backend chosen, not even by drawing a figure."""
    code = r"""
import os, sys, tempfile
import matplotlib
backend = matplotlib.rcParams._get_backend_or_none()   # None: not chosen yet (resolving it would choose one)
import alexnet, alexnet.util.plots
from alexnet.util import memory
state = [memory.mode(), os.environ.get("THP_MEM_ALLOC_ENABLE"), "torch" in sys.modules]
with tempfile.TemporaryDirectory() as tmp:
    alexnet.util.plots.plot_confusion(__import__("numpy").eye(3, dtype=int), ["a", "b", "c"], os.path.join(tmp, "c.png"))
    assert os.path.getsize(os.path.join(tmp, "c.png")) > 0
state += [matplotlib.rcParams._get_backend_or_none() == backend, "matplotlib.pyplot" in sys.modules]
print(state)
"""
    assert _run(code) == str(["not configured", None, False, True, False])


def test_the_command_line_configures_memory_before_torch():
    code = r"""
import os, sys
from alexnet.cli import main as cli
from alexnet.util import memory
before = (memory.mode(), "torch" in sys.modules)   # importing the command line imports no torch
assert cli.main(["models"]) == 0
print([*before, memory.mode(), os.environ.get("THP_MEM_ALLOC_ENABLE")])
"""
    expected_mode = ("glibc malloc, freed blocks kept for reuse" if sys.platform.startswith("linux")
                     else "system malloc")
    assert _run(code) == str(["not configured", False, expected_mode, "1"])
