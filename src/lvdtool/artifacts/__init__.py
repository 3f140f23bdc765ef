"""Artifacts: directories with a manifest and shards; the unit of work, parallelism and restart is the shard."""
from lvdtool.artifacts.images import ImagesArtifact, ImageSample, ImageShardWriter, index_table
from lvdtool.artifacts.manifest import InputRef, Manifest, input_ref, open_input, read_manifest
from lvdtool.artifacts.ranks import RankInfo, rank_info
from lvdtool.artifacts.sharded_output import ShardedOutput, ShardRecord, shard_name
from lvdtool.artifacts.tables import read_parquet, write_parquet

__all__ = [
    "ImagesArtifact",
    "ImageSample",
    "ImageShardWriter",
    "InputRef",
    "Manifest",
    "RankInfo",
    "ShardRecord",
    "ShardedOutput",
    "index_table",
    "input_ref",
    "open_input",
    "rank_info",
    "read_manifest",
    "read_parquet",
    "shard_name",
    "write_parquet",
]
