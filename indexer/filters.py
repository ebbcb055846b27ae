"""Filters: a SQL WHERE clause over attribute columns, evaluated by DuckDB (SPEC 7).

    rows = matching_rows(attributes, "lang = 'en' AND year >= 2020")   # bool (n,)

The clause is DuckDB SQL over the columns of one pyarrow Table (zero-copy through Arrow), in
an in-memory connection with no access to files or the network. Bad input is a ValueError
naming the clause and what is wrong (a syntax error, an unknown column, a type mismatch).
"""
from __future__ import annotations

import re

import duckdb
import numpy as np
import pyarrow as pa

__all__ = ["ATTRIBUTE_NAME", "check_attributes", "matching_rows"]

#: attribute column names: plain SQL identifiers
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROW = "__snapline_row"


def check_attributes(table, n: int, what: str) -> pa.Table:
    """A pyarrow Table of n rows with plain identifier column names (or a clear error)."""
    if not isinstance(table, pa.Table):
        raise ValueError(f"{what}: attributes must be a pyarrow Table, got {type(table).__name__}")
    if table.num_rows != n:
        raise ValueError(f"{what}: attributes have {table.num_rows} rows for {n} vectors; "
                         f"give one row per vector")
    for name in table.column_names:
        if not ATTRIBUTE_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{what}: attribute column {name!r} must be a plain identifier "
                             f"([A-Za-z_][A-Za-z0-9_]*, not starting with '__')")
    if len(set(table.column_names)) != table.num_columns:
        raise ValueError(f"{what}: attribute columns {table.column_names} repeat a name")
    return table.combine_chunks()


def matching_rows(attributes: pa.Table | None, where: str) -> np.ndarray:
    """Boolean mask (n,) of the rows of `attributes` for which the WHERE clause is true
    (NULL counts as false)."""
    if not isinstance(where, str) or not where.strip():
        raise ValueError(f"filter must be a non-empty SQL WHERE clause string, got {where!r}")
    if attributes is None or attributes.num_columns == 0:
        raise ValueError(f"filter {where!r}: this index has no attribute columns; add vectors "
                         f"with attributes= to filter on them")
    n = attributes.num_rows
    table = attributes.append_column(_ROW, pa.array(np.arange(n, dtype=np.int64)))
    sql = f"SELECT {_ROW} FROM attributes WHERE ({where})"
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        if len(duckdb.extract_statements(sql)) != 1:
            raise ValueError(f"filter {where!r} must be one WHERE clause, not several statements")
        con.register("attributes", table)
        rows = con.execute(sql).fetchnumpy()[_ROW]
    except duckdb.ParserException as exc:
        raise ValueError(f"filter {where!r} is not a valid SQL WHERE clause: "
                         f"{_first_line(exc)}") from None
    except duckdb.BinderException as exc:
        raise ValueError(f"filter {where!r}: {_first_line(exc)} (attribute columns: "
                         f"{', '.join(attributes.column_names)})") from None
    except duckdb.Error as exc:
        raise ValueError(f"filter {where!r} cannot be evaluated: {_first_line(exc)}") from None
    finally:
        con.close()
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
