"""switchman.routing"""
