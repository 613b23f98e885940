"""The mask core: 0/1 masks on a layer's weight and bias, asked about in one place.

A *masked layer* computes with effective parameters W ⊙ T and b ⊙ T_b, where
T and T_b are 0/1 arrays shaped like the weight and the bias.  Two kinds of
layer carry masks, and every tool (trace, explain, plot, crosscheck,
surgery, prune-report, compress, sparse inference) asks this module, never
the blob indices:

- DNS layers (CConvolution / CInnerProduct, npcaffe.layerlib.dns) keep
  their masks as parameter blobs 2 and 3, the fork's layout, so .caffemodel
  and .solverstate files hold them; the solver regularises them and keeps
  their history, and the Net never updates them (`Layer.mask_param_indices`).
  Their gate, thresholds and splicing are DNS's own (layerlib/dns.py).
- DNS-CP layers (CPConvolution / CPInnerProduct, npcaffe.layerlib.dns_cp)
  keep one mask entry per input channel as parameter blob 2; to this module
  they give it as the weight mask T, the channel's entry spread over its
  weights (`mask_blobs`, and `Layer.stored_mask_arrays` for stored blobs),
  with no bias mask, so kept counts, bake and plain_model treat them as any
  masked layer.  Their gate and thresholds are DNS-CP's own.
- A plain Convolution or InnerProduct layer can be given masks with `attach_masks`: the masks of magnitude pruning (Han et
  al. 2015), OBD, SNIP and the like.  They live beside the parameters, not
  in `blobs`, so the layer still saves as BVLC Caffe's two blobs (`bake`
  writes W ⊙ T there).  Such masks are *fixed*: forward uses W ⊙ T, a pruned
  weight gets no gradient, and after each update it is set back to zero, so
  it stays pruned whatever the solver's momentum or weight decay (unlike
  DNS, whose pruned weights keep learning and may be spliced back).

Kept parameters are the nonzero entries of W ⊙ T and b ⊙ T_b (a kept weight
that is exactly zero does not count), the DNS paper's Table 4 rule; one
function, `kept_counts`, computes them for every tool.
"""
from typing import NamedTuple

import numpy as np

from .blob import Blob
from .errors import NetError
from .layer import registered_class

# Plain layer types that take attached masks: their blobs are [weight, bias?].  The forks' depthwise
# types are Convolution subclasses (npcaffe.layerlib.efficient) and compute with W ⊙ T alike.
MASKABLE_TYPES = ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", "InnerProduct")


class Kept(NamedTuple):
    """Parameter counts of one layer: all weights and biases, and the kept ones."""
    params: int
    kept: int


# -- the predicate and the masks ----------------------------------------------------
def is_masked(layer):
    """The layer computes with masked parameters (a DNS layer, or masks attached)."""
    return layer.mask_blobs() is not None


def mask_blobs(layer):
    """(weight mask Blob, bias mask Blob or None), or None for an unmasked layer."""
    return layer.mask_blobs()


def masked_layers(net):
    """[(name, layer)] of the net's masked layers, in net order."""
    return [(name, layer) for name, layer in zip(net.layer_names, net.layers) if layer.mask_blobs() is not None]


def mask_arrays(layer):
    """(T, T_b or None) as the masks' own flat data (views: writing them changes the masks)."""
    weight_mask, bias_mask = layer.mask_blobs()
    return weight_mask.flat_data, None if bias_mask is None else bias_mask.flat_data


def _weight_and_bias(layer):
    blobs = layer.blobs
    bias = blobs[1] if len(blobs) > 1 and getattr(layer, "bias_term", True) else None
    return blobs[0], bias


# -- effective parameters, kept counts, bake -------------------------------------------
def effective_params(layer):
    """(weight, bias or None): W ⊙ T and b ⊙ T_b for a masked layer, else new copies of W and b.

    Arrays shaped like the blobs, never views of them."""
    weight, bias = _weight_and_bias(layer)
    w = weight.data.copy()
    b = None if bias is None else bias.data.copy()
    masks = layer.mask_blobs()
    if masks is not None:
        w *= masks[0].data
        if b is not None and masks[1] is not None:
            b *= masks[1].data
    return w, b


def kept_counts(weight, bias=None, weight_mask=None, bias_mask=None):
    """Kept(params, kept) of one layer from arrays: kept = nonzero W ⊙ T plus nonzero b ⊙ T_b.

    A missing mask keeps everything (a plain or baked layer: its nonzeros)."""
    params = kept = 0
    for values, mask in ((weight, weight_mask), (bias, bias_mask)):
        if values is None:
            continue
        values = np.asarray(values)
        if mask is not None:
            values = values * np.asarray(mask)
        params += int(values.size)
        kept += int(np.count_nonzero(values))
    return Kept(params, kept)


def layer_kept(layer):
    """Kept(params, kept) of a Net's layer (weight and bias, masked if it is)."""
    weight, bias = _weight_and_bias(layer)
    masks = layer.mask_blobs() or (None, None)
    return kept_counts(weight.flat_data, None if bias is None else bias.flat_data,
                       None if masks[0] is None else masks[0].flat_data,
                       None if masks[1] is None else masks[1].flat_data)


def stored_layout(layer_type, arrays):
    """(weight, bias, weight mask, bias mask) of a layer's blobs as a .caffemodel stores them.

    DNS layer types with all four blobs carry their masks at 2 and 3, DNS-CP
    types a channel mask at 2, given here spread over the weight (the layer
    class's `stored_mask_arrays`); other layers, and masked types stored with
    two blobs (the DNS release's pruned models), have none (None).  Missing
    entries are None."""
    arrays = list(arrays) + [None] * (4 - len(arrays))
    cls = registered_class(layer_type)
    masks = cls.stored_mask_arrays(arrays) if cls is not None else None
    if masks is not None:
        return arrays[0], arrays[1], masks[0], masks[1]
    return arrays[0], arrays[1], None, None


def stored_kept(layer_type, arrays):
    """Kept(params, kept) of a stored layer's blob arrays (see `stored_layout`)."""
    return kept_counts(*stored_layout(layer_type, arrays))


def stored_effective(layer_type, arrays):
    """[W ⊙ T, b ⊙ T_b] of a stored masked layer; a plain layer's arrays unchanged."""
    weight, bias, weight_mask, bias_mask = stored_layout(layer_type, arrays)
    if weight_mask is None:
        return list(arrays)
    return [weight * weight_mask] + ([] if bias is None else [bias if bias_mask is None else bias * bias_mask])


def mask_entries(layer):
    """(nonzero T entries, nonzero T_b entries): what the masks keep, whatever W holds."""
    weight_mask, bias_mask = mask_arrays(layer)
    return int(np.count_nonzero(weight_mask)), 0 if bias_mask is None else int(np.count_nonzero(bias_mask))


def bake(layer):
    """Write W ⊙ T into the weight and b ⊙ T_b into the bias, in place; the masks stay."""
    masks = layer.mask_blobs()
    if masks is None:
        return
    weight, bias = _weight_and_bias(layer)
    np.multiply(weight.flat_data, masks[0].flat_data, out=weight.flat_data)
    if bias is not None and masks[1] is not None:
        np.multiply(bias.flat_data, masks[1].flat_data, out=bias.flat_data)


def plain_model(net):
    """The net's NetParameter with every masked layer baked into a BVLC layer of two blobs.

    DNS layers become Convolution / InnerProduct (their surgery parameters
    dropped); layers with attached masks keep their type.  What the DNS
    release ships: it loads into plain nets and upstream Caffe.  The net
    itself is not changed."""
    out = net.to_proto()
    for layer_param, layer in zip(out.layer, net.layers):
        if layer.mask_blobs() is None:
            continue
        arrays = effective_params(layer)
        del layer_param.blobs[:]
        for array in arrays:
            if array is None:
                continue
            blob_proto = layer_param.blobs.add()
            blob_proto.shape.dim.extend(array.shape)
            blob_proto.data.extend(array.ravel().tolist())
        layer.plain_layer_param(layer_param)
    return out


# -- attached (fixed) masks on plain layers --------------------------------------------
def attach_masks(layer, weight_mask=None, bias_mask=None):
    """Give a plain Convolution / InnerProduct layer fixed 0/1 masks.

    weight_mask: array shaped like the weight (default all ones); bias_mask:
    shaped like the bias, or None to leave the bias unmasked.  Pruned entries
    are zeroed at once.  Returns the (weight mask, bias mask or None) Blobs,
    which the caller may keep writing (then call `apply_masks`)."""
    if layer.type not in MASKABLE_TYPES:
        raise NetError(f"layer '{layer.name}' ({layer.type}): masks can be attached to "
                       f"{', '.join(MASKABLE_TYPES)} layers only (DNS layers carry their own)")
    weight, bias = _weight_and_bias(layer)
    blobs = [_mask_blob(layer, weight, "weight", np.ones(weight.shape, np.float32) if weight_mask is None
                        else weight_mask)]
    if bias_mask is not None:
        if bias is None:
            raise NetError(f"layer '{layer.name}' ({layer.type}): a bias mask was given but the layer has no bias")
        blobs.append(_mask_blob(layer, bias, "bias", bias_mask))
    else:
        blobs.append(None)
    layer.attached_masks = tuple(blobs)
    apply_masks(layer)
    return layer.attached_masks


def _mask_blob(layer, param, what, values):
    values = np.asarray(values, np.float32)
    if values.shape != param.shape:
        raise NetError(f"layer '{layer.name}' ({layer.type}): {what} mask of shape {values.shape} does not fit "
                       f"the {what} {param.shape}")
    if not np.isin(values, (0, 1)).all():
        raise NetError(f"layer '{layer.name}' ({layer.type}): the {what} mask must hold only 0 and 1")
    blob = Blob(param.shape, name=f"{param.name}_mask")
    blob.data[...] = values
    return blob


def detach_masks(layer):
    """Remove attached masks; the weights keep their values (pruned ones stay zero)."""
    layer.attached_masks = None


def apply_masks(layer):
    """Zero the pruned entries of a layer with attached (fixed) masks; DNS layers are left alone."""
    masks = layer.attached_masks
    if masks is None:
        return
    weight, bias = _weight_and_bias(layer)
    np.multiply(weight.flat_data, masks[0].flat_data, out=weight.flat_data)
    if masks[1] is not None:
        np.multiply(bias.flat_data, masks[1].flat_data, out=bias.flat_data)


def computing_params(layer):
    """(weight, bias or None) arrays a plain weight layer computes with: its blobs' data, or,
    with attached masks, W ⊙ T and b ⊙ T_b in buffers of the layer's own (so weights written
    through net.params after pruning still compute as pruned)."""
    weight, bias = _weight_and_bias(layer)
    masks = layer.attached_masks
    if masks is None:
        return weight.data, None if bias is None else bias.data
    buffers = layer.__dict__.get("_masked_param_buffers")
    if buffers is None or buffers[0].shape != weight.shape:
        buffers = layer._masked_param_buffers = (np.empty(weight.shape, np.float32),
                                                 None if bias is None else np.empty(bias.shape, np.float32))
    np.multiply(weight.data, masks[0].data, out=buffers[0])
    if bias is None:
        return buffers[0], None
    if masks[1] is None:
        return buffers[0], bias.data
    np.multiply(bias.data, masks[1].data, out=buffers[1])
    return buffers[0], buffers[1]


def mask_gradients(layer):
    """Zero the parameter gradients of a layer's pruned entries (its backward, with attached masks):
    the gradient of W ⊙ T with respect to W."""
    masks = layer.attached_masks
    weight, bias = _weight_and_bias(layer)
    np.multiply(weight.flat_diff, masks[0].flat_data, out=weight.flat_diff)
    if masks[1] is not None:
        np.multiply(bias.flat_diff, masks[1].flat_data, out=bias.flat_diff)
