"""Moving a staging file's bytes to another tier while it is written: multipart uploads
and copies ahead."""
