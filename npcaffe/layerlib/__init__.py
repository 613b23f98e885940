"""Layer implementations, one module per family; importing them registers their types."""
from . import (common, data, dns, loss, neuron, normalization, python_layer, recurrent, structure, vision,
               vision_extra)

__all__ = ["common", "data", "dns", "loss", "neuron", "normalization", "python_layer", "recurrent", "structure",
           "vision", "vision_extra"]
