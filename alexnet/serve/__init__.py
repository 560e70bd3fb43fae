"""``alexnet serve``: the HTTP app (``app``), its micro-batcher (``batcher``) and the page (``static/``)."""
