"""Stores behind tierfs: hot (local disk), warm (NFS namespace), and later cold (bucket)."""
