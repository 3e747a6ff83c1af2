"""RL agents: the TAP search (SB3 or random), evaluation, and the one-command pipeline."""
