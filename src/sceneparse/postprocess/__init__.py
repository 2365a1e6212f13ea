"""sceneparse.postprocess"""
