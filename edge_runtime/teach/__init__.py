"""teach/"""
