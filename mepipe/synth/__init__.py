"""Synthetic micro-expression datasets with known ground truth, in the real datasets' layouts."""
