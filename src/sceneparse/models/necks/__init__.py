"""sceneparse.models.necks"""
