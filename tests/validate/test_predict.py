"""npusim.validate.predict: a replacement hardware profile reaches the simulated step."""
from npusim.validate.convert import record_hardware
from npusim.validate.predict import predict_result
from npusim.validate.runs import published_path, read_runs


def test_hardware_override_changes_only_what_it_replaces():
    rec = {r.id: r for r in read_runs(published_path())}["V124"]
    hw = record_hardware(rec)
    base, _ = predict_result(rec)
    same, _ = predict_result(rec, hw)
    key = "calibration" if hw.calibration is not None else "efficiency"
    slow = hw.model_copy(update={key: hw.derating.model_copy(update={"scale_up_fraction": hw.derating.scale_up_fraction / 2})})
    slower, _ = predict_result(rec, slow)
    assert same == base
    assert slower > base
