"""Hook implementations of the elias adapter, loaded through the ``lever.adapters`` entry point.

The backbone itself lands with its own issue; until then this plugin registers no hooks.
"""
