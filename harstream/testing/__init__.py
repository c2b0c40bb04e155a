"""Helpers for tests and benchmarks: a private mosquitto on a free loopback port."""
