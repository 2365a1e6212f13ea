"""Detectors: compositions of backbone + neck + heads implementing the model protocol."""
from .two_stage import FasterRCNN, KeypointRCNN, MaskRCNN, RCNNRaw, TwoStageDetector

__all__ = ["FasterRCNN", "MaskRCNN", "KeypointRCNN", "TwoStageDetector", "RCNNRaw"]
