"""Evaluation: full-ranking metrics over segments with bootstrap confidence intervals."""
