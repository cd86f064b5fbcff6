"""pipeflow's benchmark suite. Run everything with ``make bench``."""
