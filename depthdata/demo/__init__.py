"""Embedded demo data: procedurally rendered scenes and bundled photographs in the real formats."""

from depthdata.demo.data import write_demo_catalog, write_demo_data

__all__ = ["write_demo_catalog", "write_demo_data"]
