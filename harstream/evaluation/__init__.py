"""The evaluation protocol's stream-level numbers and the replay timeline figure."""
