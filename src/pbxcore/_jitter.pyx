# cython: language_level=3
"""Placeholder: replaced by the media engine work."""
