"""PPO for RLHF: the algorithm's math in `alignment.ppo.core`, written in plain torch."""
