"""WriteForwardIndex: table rows → sharded Parquet files under the output directory.

Consumes dict rows per table (`videos`, `frames`, `asr_segments`, `errors`) and writes
`DIR/<table>/part-SSSSS-of-NNNNN.parquet` with the schemas from `schemas.forward_index`, whose
metadata becomes every file's key-value metadata. `DIR` is the run's staging directory
(pipelines.output): the finished run's shards are moved into the output directory, with the run id
in their names, only once the whole pipeline has succeeded.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

SHARD_TEMPLATE = "-SSSSS-of-NNNNN"


def table_prefix(output: str, table: str) -> str:
    return FileSystems.join(output, table, "part")


class WriteForwardIndex(beam.PTransform):
    """{'videos': rows, 'frames': rows, 'errors': rows} → Parquet tables; returns written file names."""

    def __init__(self, output: str, schemas: dict[str, pa.Schema], codec: str = "zstd"):
        super().__init__()
        self._output = output
        self._schemas = schemas
        self._codec = codec

    def expand(self, tables):
        written = []
        for name in sorted(tables):
            written.append(
                tables[name]
                | f"Write{name.capitalize()}"
                >> WriteToParquet(
                    table_prefix(self._output, name),
                    schema=self._schemas[name],
                    codec=self._codec,
                    file_name_suffix=".parquet",
                    shard_name_template=SHARD_TEMPLATE,
                )
            )
        return written
