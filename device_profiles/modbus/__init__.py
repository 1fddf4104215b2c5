"""Modbus register maps: the map as data (``model``), its read plan (``plan``) and the
values both ways (``registers``). Rules and the public names: :mod:`device_profiles.modbus_map`.
"""
