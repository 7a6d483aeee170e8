"""Training the demo's Wan2.2 twin (GPU, or CPU in smoke mode); never imported by workflow jobs."""
