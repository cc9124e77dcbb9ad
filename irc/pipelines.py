"""Named pipelines: the pass sequences irc runs by default."""

# Float level: clean up, evaluate constant sub-graphs, fold BatchNorm into the convolutions
# and gemms before it, fuse bias and activations into them, clean up again.
DEFAULT_FLOAT_PIPELINE = "canonicalize,constant-fold,fold-batchnorm,fuse,canonicalize"
