"""The cascadexml backbone adapter for lever (install extra: `lever-xc[cascadexml]`)."""
