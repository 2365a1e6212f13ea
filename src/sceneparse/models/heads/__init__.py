"""Heads: one concept per file, named as the papers name them."""
