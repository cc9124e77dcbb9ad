"""Named pipelines: the pass sequences irc runs by default."""

# Float level: clean up, evaluate constant sub-graphs, fold BatchNorm into the convolutions
# and gemms before it, fuse bias and activations into them, clean up again.
DEFAULT_FLOAT_PIPELINE = "canonicalize,constant-fold,fold-batchnorm,fuse,canonicalize"

# Calibrated float graph to L3: quantize the planned layers (``weights``: the weight
# clipping, mse or minmax), lower them to integer ops, pack 4- and 2-bit weights, store
# the integer layers' activations channels last.
QUANTIZE_PIPELINE = "quantize{{weights={weights}}},lower-quantized,pack-weights,channels-last"


def quantize_pipeline(weights: str = "mse") -> str:
    """``QUANTIZE_PIPELINE`` with its weight clipping filled in."""
    return QUANTIZE_PIPELINE.format(weights=weights)
