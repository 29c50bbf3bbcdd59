import math

import pytest

from picollm.core.errors import CheckpointError
from picollm.runs.layout import METRIC_COLUMNS, read_metrics, write_metrics


def rows(n: int) -> list[dict]:
    return [{"step": 10 * i, "val_loss": 3.0 - 0.1 * i, "avg_loss": 3.1 - 0.1 * i} for i in range(n)]


def test_metrics_round_trip(tmp_path):
    write_metrics(tmp_path, rows(3))
    m = read_metrics(tmp_path)
    assert list(m.columns) == METRIC_COLUMNS and list(m["step"]) == [0, 10, 20]


def test_a_last_row_cut_in_half_is_dropped_with_a_warning(tmp_path, caplog):
    write_metrics(tmp_path, rows(4))
    path = tmp_path / "metrics.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # cut the last row mid-line
    with caplog.at_level("WARNING", logger="picollm"):
        m = read_metrics(tmp_path)
    assert list(m["step"]) == [0, 10, 20] and math.isclose(m["val_loss"].iloc[-1], 2.8)
    assert "last row is incomplete" in caplog.records[0].getMessage()


def test_a_last_number_cut_short_is_dropped_too(tmp_path):
    write_metrics(tmp_path, rows(3))
    path = tmp_path / "metrics.csv"
    path.write_text(path.read_text().rstrip("\n")[:-2])  # same number of fields, last value truncated
    assert list(read_metrics(tmp_path)["step"]) == [0, 10]


def test_a_ragged_row_in_the_middle_is_corruption(tmp_path):
    write_metrics(tmp_path, rows(4))
    path = tmp_path / "metrics.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2] + ",1,2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="row\\(s\\) 2 have the wrong number of fields"):
        read_metrics(tmp_path)


def test_a_missing_metrics_file_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="metrics.csv is missing"):
        read_metrics(tmp_path)
