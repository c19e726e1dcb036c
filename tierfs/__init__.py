"""tierfs: one POSIX namespace over node-local NVMe (hot), NFS (warm) and object storage (cold)."""

__version__ = "0.1.0"
