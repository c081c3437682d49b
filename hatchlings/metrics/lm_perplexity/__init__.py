"""The `lm_perplexity` metric; load it with `evaluate.load(<this folder>)` (see its README.md)."""
