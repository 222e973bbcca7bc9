"""Every report table has its columns, rows or none: a float32-only run has no derivations
rows, and its derivations.csv must still open with pandas (it was a 1-byte file); a report
whose summary has no rows still gets its index.html (its failure count was an int(''))."""

import pandas as pd
import pytest

from parity import runner
from parity.checks import derivations, ties
from parity.checks.common import row_columns
from parity.reports import write_report


def test_a_table_without_rows_is_written_with_its_columns(tmp_path):
    results = runner.gather([{"dtype": "float32", "rows": {}, "environment": {}}])
    results.environment = {}
    folder = write_report(results, tmp_path, run_id="empty")
    for table, columns in (("derivations", derivations.COLUMNS), ("ties", ties.COLUMNS),
                           ("forward", row_columns())):  # fmt: skip
        frame = pd.read_csv(folder / f"{table}.csv")
        assert list(frame.columns) == columns and frame.empty


@pytest.mark.keras
def test_the_declared_columns_are_those_of_a_run_with_rows():
    config = runner.RunConfig(models=("zhou",), dtypes=("float64",), images=4,
                              states=("initial", "trained"), training=None)  # fmt: skip
    tables = runner.run(config, in_process=True).tables
    for table in ("forward", "gradients", "isolation", "derivations", "ties"):
        assert not tables[table].empty, table
        assert list(tables[table].columns) == runner.EMPTY_COLUMNS.get(table, row_columns()), table
