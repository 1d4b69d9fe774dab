"""Prefect flows over the depthdata library: ``ingest``, ``teacher``, ``lidar``, ``eda`` and
``build``, one task per shard on Dask (``docs/building.md``, and :mod:`flows.build`)."""

from flows import forksafe

# Every process that runs these flows imports this package, and those are the processes whose
# forked children (DataLoader workers) Prefect breaks; the hook acts only in such a child.
forksafe.install()
