"""backprop-lab's version as installed: the model card and the ONNX export record it."""
from __future__ import annotations

from importlib import metadata

PACKAGE = "backprop-lab"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
