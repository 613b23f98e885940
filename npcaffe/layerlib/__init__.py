"""Layer implementations, one module per family; importing them registers their types."""
from . import common, data, dns, loss, neuron, vision  # noqa: F401
