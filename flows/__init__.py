"""Prefect flows over the depthdata library: ``ingest``, ``label``, ``lidar``, ``eda`` and
``build``, one task per shard on Dask (see docs/flows.md and :mod:`flows.build`)."""
