"""Backbone adapters shipped with lever, each a pluggy plugin registered under the
``lever.adapters`` entry-point group (see pyproject.toml)."""
