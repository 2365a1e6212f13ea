"""Necks: combine backbone maps into the multi-scale features the heads read."""
from .fpn import FPN

__all__ = ["FPN"]
