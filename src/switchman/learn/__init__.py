"""switchman.learn"""
