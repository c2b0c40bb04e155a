"""Offline learning: windows from recordings, training loops, evaluation, export."""
