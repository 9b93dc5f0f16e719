"""Method-agnostic training machinery: optimisers, checkpoints, the loop."""
