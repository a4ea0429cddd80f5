"""The elias backbone adapter for lever (install extra: `lever-xc[elias]`)."""
