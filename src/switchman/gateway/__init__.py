"""switchman.gateway"""
