"""sceneparse.data.formats"""
