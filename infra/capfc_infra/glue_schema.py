"""Glue table definitions mirroring the product's own Athena DDL (``python -m forecasting athena-ddl``).

Why derived, not copied: the column lists and projection settings come from
``forecasting.sources.athena`` itself (the same Arrow schemas and Hive types its ``ddl()``
prints), so the tables CloudFormation creates and the tables the product would create with
``athena-ddl`` cannot drift apart. ``tests/test_infra_data.py`` checks both against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SYMLINK_INPUT = "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
IGNORE_KEY_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"


@dataclass(frozen=True)
class TableDef:
    """One Glue table: columns, partition keys, location under the store and table parameters."""

    name: str
    columns: tuple[tuple[str, str], ...]
    partition_keys: tuple[tuple[str, str], ...]
    location: str  # relative to the store root, ending in "/"
    parameters: dict[str, str]
    symlink: bool = False


def table_defs(business_units: Sequence[str] | None = None) -> list[TableDef]:
    """The inventory, metrics and plan tables, in the product's DDL order.

    ``location`` and ``storage.location.template`` are relative to the store root (the caller
    prefixes ``s3://bucket/prefix/``); partition projection exactly as ``athena.ddl`` sets it.
    """
    from forecasting.sources import athena
    from forecasting.sources.base import PLAN_TABLES
    from forecasting.sources.parquet import PARTITIONING

    schemas = athena._default_schemas()  # the contract's types: what ddl() uses without files

    def cols(table: str, schema, skip=()) -> tuple[tuple[str, str], ...]:
        return tuple(
            (f.name, athena.hive_type(f.type, f"{table}.{f.name}")) for f in schema if f.name not in skip
        )

    out = [
        TableDef(
            name=athena.INVENTORY_TABLE,
            columns=cols(athena.INVENTORY_TABLE, schemas[athena.INVENTORY_TABLE]),
            partition_keys=(),
            location="inventory/",
            parameters={"classification": "parquet", "EXTERNAL": "TRUE"},
        )
    ]
    metrics_params = {"classification": "parquet", "EXTERNAL": "TRUE", "projection.enabled": "true"}
    if business_units:
        metrics_params["projection.business_unit.type"] = "enum"
        metrics_params["projection.business_unit.values"] = ",".join(
            sorted({athena.partition_value(b) for b in business_units})
        )
    else:
        metrics_params["projection.business_unit.type"] = "injected"
    lo, hi = athena.YEAR_RANGE
    metrics_params["projection.year.type"] = "integer"
    metrics_params["projection.year.range"] = f"{lo},{hi}"
    metrics_params["storage.location.template"] = "metrics/business_unit=${business_unit}/year=${year}/"
    part_types = {"business_unit": "string", "year": "int"}
    out.append(
        TableDef(
            name=athena.METRICS_TABLE,
            columns=cols(athena.METRICS_TABLE, schemas[athena.METRICS_TABLE], skip=PARTITIONING.names),
            partition_keys=tuple((n, part_types[n]) for n in PARTITIONING.names),
            location="metrics/",
            parameters=metrics_params,
        )
    )
    for name in PLAN_TABLES:
        table = athena.plan_table(name)
        base = f"{athena.MANIFEST_DIR}/{table}/"
        out.append(
            TableDef(
                name=table,
                columns=cols(table, schemas[name], skip=["run_id"]),
                partition_keys=(("run_id", "string"),),
                location=base,
                parameters={
                    "EXTERNAL": "TRUE",
                    "projection.enabled": "true",
                    "projection.run_id.type": "injected",
                    "storage.location.template": base + "run_id=${run_id}/",
                },
                symlink=True,
            )
        )
    return out
