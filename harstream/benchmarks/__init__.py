"""Benchmark scenarios behind ``harstream bench``: numbers, printed and saved, never
timed unit tests. ``engine``: in-process throughput; ``e2e``: decision latency through
a local mosquitto with the gateway in its own process and devices in another."""
