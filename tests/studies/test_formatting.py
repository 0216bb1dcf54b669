

def test_readable_tables_turn_few_rows_and_split_many_columns():
    import pandas as pd

    from spartan_core.formatting import readable

    per_seed = pd.DataFrame({"seed": [0, 1, 2], **{f"measure_{i}": [i, i + 1, i + 2] for i in range(9)}})
    (turned,) = readable(per_seed, index="seed")
    assert list(turned.columns) == [0, 1, 2] and list(turned.index)[:2] == ["measure 0", "measure 1"]
    rows = pd.DataFrame({f"c_{i}": range(8) for i in range(14)})
    parts = readable(rows)
    assert [len(p.columns) for p in parts] == [6, 6, 2] and all(len(p) == 8 for p in parts)
    assert list(parts[2].columns) == ["c 12", "c 13"]
    narrow = pd.DataFrame({"a": range(8), "b": range(8)})
    assert [p.equals(narrow) for p in readable(narrow)] == [True]
