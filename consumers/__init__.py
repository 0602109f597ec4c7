"""Sidestream consumers."""
