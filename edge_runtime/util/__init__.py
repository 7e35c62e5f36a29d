"""util/"""
