"""mepipe: reproducible, parallel preprocessing and features for facial micro-expression recognition."""

__version__ = "0.1.0"
