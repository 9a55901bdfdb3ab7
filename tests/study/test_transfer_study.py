"""The study end to end on tiny settings: resume, CLI outputs, bad flags, datasets."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scaled_decay.transfer.cache import RunCache
from scaled_decay.transfer.cli import main
from scaled_decay.transfer.data import load_pool
from scaled_decay.transfer.runner import run_study
from scaled_decay.transfer.settings import StudySettings

TINY = dict(
    widths=(8, 16),
    n_train=128,
    data_sizes=(64, 128),
    data_width=8,
    epochs=1,
    batch_size=32,
    seeds=2,
    optimizers=("sgd",),
    parametrizations=("sp",),
    first_grid_points=3,
    grid_points=3,
    max_extensions=1,
)
TINY_FLAGS = [
    "--widths",
    "8,16",
    "--n-train",
    "128",
    "--data-sizes",
    "64,128",
    "--data-width",
    "8",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--seeds",
    "1",
    "--grid-points",
    "3",
    "--first-grid-points",
    "3",
    "--no-progress",
]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """One generated MNIST-1D pool for the module (generating it takes a few seconds)."""
    d = tmp_path_factory.mktemp("pool")
    load_pool("mnist1d", 0, str(d))
    return d


def _cache_dir(data_cache, tmp_path):
    """A fresh run cache that already holds the module's data pool."""
    runs = tmp_path / "cache"
    runs.mkdir(parents=True)
    for f in os.listdir(data_cache):
        if f.endswith(".npz"):
            os.link(data_cache / f, runs / f)
    return str(runs)


class _StopAfter:
    """A progress hook that interrupts the study like Ctrl-C after ``n`` trained runs."""

    def __init__(self, n):
        self.n = n

    def plan(self, total):
        pass

    def grow(self, cost):
        pass

    def done(self, cost, trained, cached, queued):
        if trained >= self.n:
            raise KeyboardInterrupt


def test_interrupted_study_resumes_from_the_cache(data_cache, tmp_path):
    s = StudySettings(**TINY, axes=("width",))
    cache = _cache_dir(data_cache, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_study(s, cache, workers=1, progress=_StopAfter(7))
    assert len(RunCache(cache)) == 7
    resumed = run_study(s, cache, workers=1)
    assert resumed["cached"] == 7 and resumed["trained"] > 0
    fresh = run_study(s, _cache_dir(data_cache, tmp_path / "fresh"), workers=1)
    assert fresh["cached"] == 0
    assert resumed["trained"] + resumed["cached"] == fresh["trained"]
    # training is deterministic, so the resumed study measures exactly what a fresh one does
    assert resumed["chains"] == fresh["chains"]
    again = run_study(s, cache, workers=1)
    assert again["trained"] == 0 and again["cached"] == fresh["trained"]


def test_a_torn_cache_file_is_retrained_not_trusted(data_cache, tmp_path):
    s = StudySettings(**dict(TINY, seeds=1), axes=("width",))
    cache = _cache_dir(data_cache, tmp_path)
    first = run_study(s, cache, workers=1)
    victim = sorted(os.listdir(RunCache(cache).runs_dir))[0]
    with open(os.path.join(RunCache(cache).runs_dir, victim), "w") as f:
        f.write('{"spec": {"dataset": "mnist1d", "n_tr')  # a write cut short
    second = run_study(s, cache, workers=1)
    assert second["trained"] == 1 and second["chains"] == first["chains"]


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_cli_smoke_writes_figure_table_and_json(data_cache, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "scaled_decay",
        "transfer",
        *TINY_FLAGS,
        "--workers",
        "2",
        "--out",
        str(out),
        "--cache",
        _cache_dir(data_cache, tmp_path),
        "--optimizers",
        "adamw",
        "--parametrizations",
        "mup",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("transfer.png", "transfer_data.png", "drift.png", "exponents.png", "collapse.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        import matplotlib.pyplot as plt

        img = plt.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    study = _strict_json(out / "runs.json")
    assert study["trained"] == len(study["runs"]) > 0
    assert {c["axis"] for c in study["chains"].values()} == {"width", "data"}
    for run in study["runs"]:
        assert set(run["result"]) >= {"holdout_nll", "holdout_acc", "train_nll", "seconds"}
    table = (out / "drift.md").read_text()
    rows = [l for l in table.splitlines() if l.startswith("| adamw |")]
    assert len(rows) == 6 + 6  # 3 rules x 2 modes (width arm), 3 rules x 2 modes (data arm)
    assert all(len(r.split("|")) == len(rows[0].split("|")) for r in rows)
    assert "### Width arm: n = 8 -> 16" in table and "### Data arm: n_train = 64 -> 128" in table
    assert "drift.md" in proc.stdout and "runs trained" in proc.stdout
    assert "slope log λ\\*" in (out / "exponents.md").read_text()
    # --replot rewrites the outputs from runs.json alone, training nothing
    for name in ("drift.md", "transfer.png", "drift.png"):
        os.remove(out / name)
    assert main(["--replot", "--out", str(out), "--cache", str(tmp_path / "unused")]) == 0
    assert (out / "drift.md").read_text() == table
    assert (out / "drift.png").exists() and (out / "transfer.png").exists()
    summary = (out / "summary.md").read_text().splitlines()
    assert sum(l.startswith("| adamw / mup |") for l in summary) == 3  # one row per rule
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--widths", "64"], "widths must be at least two increasing"),
        (["--widths", "64,x"], "comma-separated integers"),
        (["--widths", "256,64"], "widths must be at least two increasing"),
        (["--optimizers", "lion"], "lion not in sgd, adamw"),
        (["--rules", "fan_in,mean"], "mean not in"),
        (["--seeds", "0"], "expected a positive number"),
        (["--grid-points", "2"], "grid_points must be an integer >= 3"),
        (["--first-grid-points", "1"], "first_grid_points must be an integer >= 3"),
        (["--dataset", "cifar"], "invalid choice"),
        (["--dataset", "digits", "--n-train", "5000"], "digits has 1297 training samples"),
        (["--lr-adamw", "-1"], "expected a positive number"),
        (["--replot"], "--replot needs --out"),
        (["--tokens", "--arch", "cnn"], "--tokens trains the transformer on text"),
        (["--joint", "--tokens"], "--joint and --tokens are separate studies"),
        (["--replot", "--out", "/nonexistent/study"], "cannot read a study"),
    ],
)
def test_bad_flags_give_a_clear_error(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*flags, "--cache", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_reject_bad_values_naming_the_argument():
    with pytest.raises(ValueError, match="modes"):
        StudySettings(modes=("l2",))
    with pytest.raises(ValueError, match=r"lr\['adamw'\]"):
        StudySettings(lr={"sgd": 0.1, "adamw": 0.0})
    with pytest.raises(ValueError, match="epochs"):
        StudySettings(epochs=0)
    with pytest.raises(ValueError, match="workers"):
        run_study(StudySettings(), "unused", workers=0)


def test_pools_hold_fixed_held_out_sets(data_cache):
    pool = load_pool("mnist1d", 0, str(data_cache))
    assert pool.x_train.shape == (16000, 40) and pool.x_holdout.shape == (1000, 40)
    assert pool.x_train.dtype == np.float32 and set(np.unique(pool.y_holdout)) == set(range(10))
    x, y = pool.train_subset(4000)
    assert np.array_equal(x, pool.x_train[:4000]) and np.array_equal(y, pool.y_train[:4000])
    with pytest.raises(ValueError, match="n_train"):
        pool.train_subset(16001)
    digits = load_pool("digits", 0)
    assert digits.x_train.shape == (1297, 64) and digits.x_holdout.shape == (500, 64)
    assert abs(float(digits.x_train.mean())) < 1e-5
    with pytest.raises(ValueError, match="dataset"):
        load_pool("cifar10", 0)


def test_digits_is_a_second_dataset(tmp_path):
    s = StudySettings(**dict(TINY, seeds=1, n_train=1297, data_sizes=(80, 160)), dataset="digits")
    study = run_study(s, str(tmp_path), workers=1)
    widths = [r for r in study["runs"] if r["spec"]["n_train"] == 1297]
    assert widths and all(r["spec"]["dataset"] == "digits" for r in study["runs"])
    assert {p["n_train"] for p in study["chains"]["data/sgd/sp"]["points"]} == {80, 160}


def test_default_output_folder_is_visible_named_and_holds_the_cache(tmp_path, monkeypatch, capsys):
    from scaled_decay.transfer.cli import default_out

    assert default_out(True, "mnist1d") == "scaled_decay_quick"
    assert default_out(False, "mnist1d") == "scaled_decay_study"
    assert default_out(True, "digits") == "scaled_decay_quick_digits"
    monkeypatch.chdir(tmp_path)
    flags = [f for f in TINY_FLAGS]
    flags[flags.index("--data-sizes") + 1] = "64,96"
    assert (
        main(
            [
                "--quick",
                "--dataset",
                "digits",
                "--workers",
                "1",
                "--optimizers",
                "sgd",
                "--parametrizations",
                "sp",
                *flags,
            ]
        )
        == 0
    )
    out = tmp_path / "scaled_decay_quick_digits"
    assert (out / "drift.md").exists() and (out / "runs.json").exists()
    assert len(os.listdir(out / "cache" / "runs")) > 0  # the cache lives inside the folder
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing hidden
    assert f"outputs in {out}{os.sep}" in capsys.readouterr().out


def test_quick_preset_stays_within_its_budget():
    """The quick preview's sizes, whose cost was measured (quick_timing.md): a change here
    must be re-measured and the record and README updated."""
    from scaled_decay.transfer.settings import quick_settings

    s = quick_settings()
    assert (
        s.widths,
        s.n_train,
        s.data_sizes,
        s.data_width,
        s.seeds,
        s.epochs,
        s.rules,
        s.refine_half_span,
    ) == ((32, 128, 512), 1000, (250, 1000, 4000), 64, 1, 20, ("none", "param_count"), 0.375)


def test_finished_only_reports_the_chains_the_cache_completes(data_cache, tmp_path):
    s = StudySettings(**dict(TINY, seeds=1), axes=("width",))
    cache = _cache_dir(data_cache, tmp_path)
    full = run_study(s, cache, workers=1)
    longer = s.replace(widths=(8, 16, 32))  # the 32-wide point was never trained
    partial = run_study(longer, cache, workers=1, train=False)
    assert partial["trained"] == 0
    assert partial["partial"] == {"width/sgd/sp": "2 of 3 axis points finished"}
    chain = partial["chains"]["width/sgd/sp"]
    assert chain["values"] == [8, 16] and chain == full["chains"]["width/sgd/sp"]
    from scaled_decay.transfer.report import write_outputs

    out = tmp_path / "out"
    write_outputs(partial, str(out))
    assert "PARTIAL" in (out / "drift.md").read_text()
    assert "2 of 3 axis points" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit) as exc:  # nothing of this study is in that cache
        main(["--finished-only", "--cache", str(tmp_path / "empty"), *TINY_FLAGS])
    assert exc.value.code == 2


def test_queue_serves_earlier_axis_points_before_costlier_runs(tmp_path):
    # a chain of cheap runs must not wait behind another chain's widest, costliest point
    import heapq

    from scaled_decay.transfer.models import Arm
    from scaled_decay.transfer.runner import _Study
    from scaled_decay.transfer.train import RunSpec

    st = _Study(StudySettings(**TINY), RunCache(str(tmp_path)), None)
    arm = Arm("sgd", "sp", "none", "decoupled")
    wide = RunSpec("mnist1d", 128, 512, 8, arm, 0.1, 0, 1, 32, 0.1)
    narrow = RunSpec("mnist1d", 64, 8, 8, arm, 0.1, 0, 1, 32, 0.1)
    cheaper = RunSpec("mnist1d", 64, 8, 8, arm, 0.01, 0, 1, 32, 0.1)
    assert wide.cost() > narrow.cost()
    st.need(wide, rank=3)
    st.need(narrow, rank=1)
    st.need(cheaper, rank=1)
    order = [heapq.heappop(st.queue)[-1] for _ in range(3)]
    assert order[-1] == wide.key() and set(order[:2]) == {narrow.key(), cheaper.key()}
