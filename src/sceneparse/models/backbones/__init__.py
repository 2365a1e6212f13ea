"""sceneparse.models.backbones"""
