"""daemon/"""
