"""The write path: staging, placement, publishing to the warm tier and the bucket,
write-back, the journal and recovery."""
