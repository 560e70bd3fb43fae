"""One line describing the machine a benchmark ran on: ``alexnet.util.machine``'s, which `alexnet compare` uses too.

The bench scripts call memory.configure() before they import this module."""
from alexnet.util.machine import load_average, machine  # noqa: F401  (the bench scripts' `from machine import ...`)
