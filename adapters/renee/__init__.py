"""The renee backbone adapter for lever (install extra: `lever-xc[renee]`)."""
