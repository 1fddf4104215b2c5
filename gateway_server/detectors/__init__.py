"""Detectors: pure functions over events and arrays (style.md); thresholds from weighing.metrology."""
