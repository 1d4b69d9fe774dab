"""The sharded Zarr v3 store with its Parquet manifest (see :mod:`.store` for the layout)."""

from depthdata.store.fields import FIELDS, STAGES, FieldSpec, auto_shard_size, field_spec
from depthdata.store.store import SCHEMA_VERSION, WORKING, Group, ShardStatus, Store, is_remote, select_groups

__all__ = ["FIELDS", "SCHEMA_VERSION", "STAGES", "FieldSpec", "Group", "ShardStatus", "Store", "WORKING",
           "auto_shard_size", "field_spec", "is_remote", "select_groups"]
