"""Sidestream services."""
