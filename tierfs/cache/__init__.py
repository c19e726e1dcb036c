"""The hot tier's block cache: block files, their index entries, eviction and read-ahead."""
