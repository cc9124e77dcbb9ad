"""Model importers: external formats (ONNX) into the irc graph IR."""
