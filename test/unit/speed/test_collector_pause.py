"""A compile, and the steps that allocate most, run with the cyclic garbage collector paused
(esact_cc/collector_pause.py: full collections walk the whole IR, 1.2 s of BERT-base's 11 s
at 512 tokens) and give it back as they found it."""

from __future__ import annotations

import gc

import pytest
from esact_cc.passes import schedule

from esact_cc.backend import emit_esb
from esact_cc.bundled_model import MODELS_DIR
from esact_cc.collector_pause import collector_paused
from esact_cc.pipeline import compile_model


def test_schedule_and_emission_run_with_the_collector_paused(tmp_path, monkeypatch):
    enabled: dict[str, bool] = {}

    def spy(name, function):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            enabled[name] = gc.isenabled()
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(schedule, "assign_tokens", spy("schedule", schedule.assign_tokens))
    monkeypatch.setattr(emit_esb, "write_esb", spy("emission", emit_esb.write_esb))
    module, store = compile_model(str(MODELS_DIR / "digits_vit.onnx"), "esact")
    assert gc.isenabled()
    emit_esb.emit_esb(module, tmp_path / "m.esb", store)
    assert enabled == {"schedule": False, "emission": False}
    assert gc.isenabled()


def test_every_stage_and_pass_of_a_compile_runs_with_the_collector_paused():
    enabled: list[bool] = []
    compile_model(str(MODELS_DIR / "digits_vit.onnx"), "esact",
                  on_stage=lambda *_: enabled.append(gc.isenabled()),
                  before_pass=lambda *_: enabled.append(gc.isenabled()))
    assert len(enabled) > 10 and not any(enabled)
    assert gc.isenabled()


@pytest.mark.parametrize("enabled_before", [True, False])
def test_the_collector_is_left_as_it_was(enabled_before):
    (gc.enable if enabled_before else gc.disable)()
    try:
        with collector_paused():
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled() == enabled_before
        with pytest.raises(ValueError), collector_paused():
            raise ValueError
        assert gc.isenabled() == enabled_before
    finally:
        gc.enable()
