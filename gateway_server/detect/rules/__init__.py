"""Detectors: pure functions over events and arrays (style.md).

Every legal threshold comes from weighing.metrology.
"""
