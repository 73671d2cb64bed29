"""svdh trainer: phantom radiographs, datasets, fitting and evaluation."""

__version__ = "0.1.0"
