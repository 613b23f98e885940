"""Layer implementations, one module per family; importing them registers their types."""
from . import (common, convolution, data, dns, dns_cp, efficient, loss, neuron, normalization, pooling,
               python_layer, recurrent, structure)

__all__ = ["common", "convolution", "data", "dns", "dns_cp", "efficient", "loss", "neuron", "normalization",
           "pooling", "python_layer", "recurrent", "structure"]
