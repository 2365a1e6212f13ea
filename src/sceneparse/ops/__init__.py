"""sceneparse.ops"""
