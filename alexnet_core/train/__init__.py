"""Training: the loop, its commits, status and snapshots, devices, multi-worker joins, the launcher."""
