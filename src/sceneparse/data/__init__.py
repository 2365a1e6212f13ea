"""sceneparse.data"""
