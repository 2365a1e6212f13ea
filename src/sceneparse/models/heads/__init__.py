"""sceneparse.models.heads"""
