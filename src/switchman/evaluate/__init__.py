"""switchman.evaluate"""
