"""Named pipelines: the pass sequences irc runs by default."""

# Float level: clean up, evaluate constant sub-graphs, fold BatchNorm into the convolutions
# and gemms before it, make written-out activations ops, fuse bias and activations into the
# layers, clean up again.
DEFAULT_FLOAT_PIPELINE = (
    "canonicalize,constant-fold,fold-batchnorm,recognize-activations,fuse,canonicalize"
)

# The float level of a model that will be quantized: as the default, but hard_swish stays
# its own op. A layer with hard_swish fused has no integer form; a layer followed by its
# hard_swish runs as an integer layer and a lookup table (``qlut``).
QUANTIZED_FLOAT_PIPELINE = (
    "canonicalize,constant-fold,fold-batchnorm,recognize-activations,fuse{acts=relu,clip},"
    "canonicalize"
)

# Calibrated float graph to L3: quantize the planned layers (``weights``: the weight
# clipping, mse or minmax), lower them to integer ops, pack 4- and 2-bit weights, store
# the convolution layers' activations (integer and float) channels last.
QUANTIZE_PIPELINE = "quantize{{weights={weights}}},lower-quantized,pack-weights,channels-last"


def quantize_pipeline(weights: str = "mse") -> str:
    """``QUANTIZE_PIPELINE`` with its weight clipping filled in."""
    return QUANTIZE_PIPELINE.format(weights=weights)


def float_pipeline_to_quantize(pipeline: str) -> str:
    """The float pipeline of a model that will be quantized: ``QUANTIZED_FLOAT_PIPELINE``
    in place of the default, any other ``pipeline`` as given."""
    return QUANTIZED_FLOAT_PIPELINE if pipeline == DEFAULT_FLOAT_PIPELINE else pipeline


def float_deploy_pipeline(pipeline: str) -> str:
    """The passes of a model compiled at FP32: the float ``pipeline``, then ``channels-last``
    as the quantize pipeline ends (none added to an empty pipeline, or twice)."""
    if not pipeline or "channels-last" in pipeline.split(","):
        return pipeline
    return f"{pipeline},channels-last"
