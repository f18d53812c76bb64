"""Quality of an output without a ground-truth image: NIQE and the comparisons against its input."""
