"""SFT and RL on agent trajectories: chunked token sequences, batching and the algorithms
(GRPO advantages, PPO-clip, TOPR, IPA) as small functions over tensors."""
