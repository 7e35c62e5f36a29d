"""core/"""
