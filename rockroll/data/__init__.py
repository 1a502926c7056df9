"""Data synthesis: tasks made from real code (sources, strategies, builds, review, trajectories)."""
