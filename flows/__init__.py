"""Prefect flows over the depthdata library: ``ingest``, ``teacher``, ``lidar``, ``eda`` and
``build``, one task per shard on Dask (``docs/building.md``, and :mod:`flows.build`)."""
