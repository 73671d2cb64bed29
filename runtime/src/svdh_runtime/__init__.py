"""svdh runtime: score hand radiographs with a packaged model, without torch.

Importing this package is cheap: heavy modules (onnxruntime, pydicom, Pillow)
are imported by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
