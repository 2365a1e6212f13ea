"""sceneparse.evaluation"""
