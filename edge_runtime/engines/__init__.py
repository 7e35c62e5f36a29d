"""engines/"""
