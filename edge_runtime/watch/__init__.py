"""watch/"""
