"""Device profiles (validated TOML data) and one sans-I/O codec per scale protocol.

Layer 2 of architecture.md §2: imports only :mod:`weighing`. Adding a scale model that
speaks a known protocol is a new TOML file in ``profiles/``, no code.
"""
