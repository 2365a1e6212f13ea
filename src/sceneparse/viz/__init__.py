"""sceneparse.viz"""
