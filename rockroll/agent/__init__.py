"""The agent harness: loop, tools, model backends, trajectories."""
