"""Small helpers without a domain: argument and path checks with the one atomic writer (``checks``), figures
(``plots``), the machine's CPUs and memory (``machine``, ``memory``) and progress lines (``progress``)."""
