"""svdh exporter: turns trained checkpoints into verified ONNX bundles.

Importing it is cheap and pulls no torch; the modules that need torch import
it themselves.
"""

__version__ = "0.1.0"
