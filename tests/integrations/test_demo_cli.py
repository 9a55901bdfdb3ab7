"""`scaled-decay demo`: runs end to end on built-in data; bad flags give a clear error."""

import pytest

from scaled_decay.cli import main


def test_demo_runs_and_prints_losses_and_report(capsys):
    assert main(["demo", "--width", "16", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch.optim.AdamW" in out and "sd.AdamW fan_in" in out
    lines = [ln for ln in out.splitlines() if ln.startswith(("torch.optim", "sd.AdamW"))]
    losses = [float(ln.split()[-1]) for ln in lines]
    assert len(losses) == 6 and all(0 < v < 10 for v in losses)
    assert losses[0] == losses[1]  # sd.AdamW without scaling is torch.optim.AdamW
    assert "decay_report()" in out and "fan_in" in out


@pytest.mark.parametrize(
    "argv, word",
    [(["demo", "--width", "0"], "--width"), (["demo", "--weight-decay", "-1"], "--weight-decay")],
)
def test_demo_rejects_bad_flags(argv, word):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert word in str(info.value)
