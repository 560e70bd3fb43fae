"""Looking inside a trained network: activations and features of any layer (``features``) and ``alexnet show``'s
figures of filters, activations and nearest neighbours (``show``). Named ``inspection`` so that it cannot shadow
the standard library's ``inspect``."""
