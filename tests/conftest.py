"""Shared test settings."""

import torch

# The tests use tiny models whose ops are too small to gain from threads; one thread also keeps
# timings stable when several test processes share the 2 cores.
torch.set_num_threads(1)
