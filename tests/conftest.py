"""Root of the test tree.

Its presence puts ``tests/`` on ``sys.path`` (pytest's prepend import mode), so test
modules import the shared helpers by name: ``model_paths`` (where the light models and
../shared live) and ``onnx_builders`` (small ONNX models).
"""
