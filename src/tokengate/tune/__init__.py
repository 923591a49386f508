"""Search engine configurations with real restarts."""
