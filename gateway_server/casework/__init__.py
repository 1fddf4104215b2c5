"""Casework: the inspection queue, tasks, complaints, compensation and the case file."""
