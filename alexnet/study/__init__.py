"""``alexnet study``: the ablations of the paper's claims (``studies``), their runner, metrics, statistics and
plots."""
