"""Layer implementations, one module per family; importing them registers their types."""
from . import common, data, dns, loss, neuron, normalization, python_layer, structure, vision, vision_extra  # noqa: F401
