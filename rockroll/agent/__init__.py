"""The agent harness: the loop, its tools, context management, trajectories and sessions."""
