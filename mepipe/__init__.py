"""mepipe: reproducible, parallel preprocessing and features for facial micro-expression recognition."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    # ``mepipe.load`` without importing zarr and the pipeline on ``import mepipe``
    if name == "load":
        from mepipe.pipeline.load import load

        return load
    raise AttributeError(f"module 'mepipe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"load"})
