"""Sidestream producers."""
