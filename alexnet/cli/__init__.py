"""The command line: ``main`` parses and dispatches, one module per command family, ``flags`` for the flags
several commands share. Errors carry their exit codes (``alexnet.errors``); ``main`` alone applies them."""
