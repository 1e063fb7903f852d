"""ranked.csv / shapes.csv through Arrow's CSV writer read back as the frame that was written."""
import math

import pandas as pd

from npusim.sweep.store import write_csv


def test_csv_round_trips_numbers_strings_booleans_categories_and_missing_values(tmp_path):
    frame = pd.DataFrame({
        "id": ["a1", "b2", "c3"],
        "score": [0.1 + 0.2, 1e-12, float("nan")],
        "tp": [8, 4, 2],
        "fits": [True, False, True],
        "plan": ["tp8, pp2", 'say "hi"', "line\nbreak"],
        "status": pd.Categorical(["ok", "infeasible", "ok"]),
    })
    path = tmp_path / "ranked.csv"
    write_csv(frame, path)
    back = pd.read_csv(path)
    assert back["id"].tolist() == ["a1", "b2", "c3"]
    assert back["score"][0] == 0.1 + 0.2 and back["score"][1] == 1e-12 and math.isnan(back["score"][2])
    assert back["tp"].tolist() == [8, 4, 2]
    assert back["fits"].tolist() == [True, False, True]
    assert back["plan"].tolist() == ["tp8, pp2", 'say "hi"', "line\nbreak"]
    assert back["status"].tolist() == ["ok", "infeasible", "ok"]
