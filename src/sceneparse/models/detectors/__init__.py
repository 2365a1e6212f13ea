"""sceneparse.models.detectors"""
