"""The run store: run folders on disk, their files, liveness and listing."""
