"""sceneparse.engine"""
