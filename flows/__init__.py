"""Prefect flows over the depthdata library: ``ingest``, ``label``, ``lidar``, ``eda`` and
``build``, one task per shard on Dask (README: "Building", and :mod:`flows.build`)."""
