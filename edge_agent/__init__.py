"""The edge agent: reads scales, turns readings into weighing events, never loses one.

Layer 3 of architecture.md §2: imports :mod:`weighing` and :mod:`device_profiles`.
"""

__version__ = "0.1.0"
