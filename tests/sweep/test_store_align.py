"""``store.align`` lines rows up with the points: the later row of an id wins, missing ids are nulls,
and the zero-copy path (rows already nearly in order) gives what the gather gives."""
import pyarrow as pa

from npusim.sweep import store
from npusim.sweep.store import align, rows_table


def _tables(n: int, size: int, order: list[int]) -> list:
    batches = [[{"id": f"p{i}", "score": float(i), "tp": i % 8} for i in range(a, min(n, a + size))]
               for a in range(0, n, size)]
    return [rows_table(batches[k]) for k in order]


def test_in_order_batches_and_a_few_replaced_rows_match_the_gather(monkeypatch):
    n = 1000
    ids = pa.array([f"p{i}" for i in range(n)], pa.string())
    tables = _tables(n, 100, list(range(10))) + [rows_table([{"id": "p5", "score": -5.0, "tp": 1},
                                                             {"id": "p700", "score": -7.0}])]
    fast, found = align(tables, ["id", "score", "tp"], ids)
    monkeypatch.setattr(store, "MAX_RUN_SHARE", 10 ** 9)  # force the gather
    slow, found2 = align(tables, ["id", "score", "tp"], ids)
    assert fast.equals(slow) and found.all() and found2.all()
    assert fast.column("id").to_pylist() == ids.to_pylist()
    assert fast.column("score")[5].as_py() == -5.0 and fast.column("score")[700].as_py() == -7.0
    assert fast.column("tp")[700].as_py() is None and fast.column("score")[6].as_py() == 6.0


def test_shuffled_batches_and_missing_ids():
    n = 300
    ids = pa.array([f"p{i}" for i in range(n)] + ["never"], pa.string())
    table, found = align(_tables(n, 50, [3, 0, 5, 1, 4, 2]), ["id", "score"], ids)
    assert table.column("score").to_pylist() == [float(i) for i in range(n)] + [None]
    assert found.tolist() == [True] * n + [False]


def test_no_points():
    table, found = align(_tables(10, 5, [0, 1]), ["id", "score"], pa.array([], pa.string()))
    assert table.num_rows == 0 and table.column_names == ["id", "score"] and len(found) == 0
