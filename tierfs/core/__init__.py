"""The core's shared state: inodes, open-file states, the namespace lock, attributes."""
