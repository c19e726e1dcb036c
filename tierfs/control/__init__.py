"""The control channel: how tierfs commands reach a running mount."""
