"""sceneparse.models"""
