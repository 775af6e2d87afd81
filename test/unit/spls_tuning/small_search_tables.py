"""Shared by the tuning tests: esact-tune search tables small enough for a unit test, with
thresholds low enough to cost accuracy."""

from esact_cc.tuning import spls_tuning


def use_small_search_tables(monkeypatch) -> None:
    monkeypatch.setattr(spls_tuning, "UNIFORM_GRID", (
        ("cosprob", "dense", 4, (0.3, 0.6, 0.9)),
        ("overlap", "topk", 4, (0.3, 1.0)),
    ))
    monkeypatch.setattr(spls_tuning, "REFINE_VALUES", {"window": (2, 4)})
    monkeypatch.setattr(spls_tuning, "FINER_THRESHOLDS", {"cosprob": (0.5, 0.7),
                                                          "overlap": (0.5,)})
    monkeypatch.setattr(spls_tuning, "LAYER_THRESHOLDS", {"cosprob": (0.2, 0.5, 0.8, 2.0),
                                                          "overlap": (0.3, 2.0)})
