"""The joint lr x lambda grids, the token-budget arm and the collapse figure, on tiny settings."""

import json
import math

import pytest

from scaled_decay.transfer.collapse import collapse_curves
from scaled_decay.transfer.joint import JointSettings, joint_rows, run_joint, write_joint_outputs
from scaled_decay.transfer.report import write_outputs
from scaled_decay.transfer.runner import run_study
from scaled_decay.transfer.settings import StudySettings, token_settings

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = dict(
    dataset="digits",
    widths=(8, 16),
    n_train=256,
    data_sizes=(64, 128),
    data_width=8,
    epochs=2,
    batch_size=32,
    seeds=1,
    first_grid_points=3,
    grid_points=3,
    max_extensions=1,
)


def test_joint_grid_finds_an_lr_and_a_shrink_per_width(tmp_path):
    s = StudySettings(**TINY)
    js = JointSettings(
        s, seeds=1, lr_factors=(0.5, 1.0, 2.0), max_extensions=1, combos=(("adamw", "mup"),)
    )
    joint = run_joint(js, str(tmp_path / "cache"), workers=1)
    assert {(c["width"], c["lr_factor"]) for c in joint["cells"]} == {
        (w, f) for w in (8, 16) for f in (0.5, 1.0, 2.0)
    }
    for c in joint["cells"]:  # the probe's shrink per unit lambda is its (muP) lr
        assert c["shrink_per_lam"] == pytest.approx(c["lr"] * 8 / c["width"])
    rows = joint_rows(joint)
    assert len(rows) == 2 and all(
        r["lr_at_best"] in {c["lr"] for c in joint["cells"]} for r in rows
    )
    paths = write_joint_outputs(joint, str(tmp_path / "out"))
    table = open(paths["md"]).read()
    assert "| adamw / mup |" in table and "drift c\\*" in table
    again = run_joint(js, str(tmp_path / "cache"), workers=1)  # resumes from the cache
    assert again["trained"] == 0 and again["cells"] == joint["cells"]
    with pytest.raises(ValueError, match="lr_factors"):
        JointSettings(s, lr_factors=(1.0, 2.0))
    with pytest.raises(ValueError, match="workers"):
        run_joint(js, str(tmp_path), workers=0)


def test_token_arm_sizes_each_width_by_its_parameters_and_reports_tau(tmp_path):
    full = token_settings()
    assert full.epochs == 1 and full.tokens_per_param == 20
    n64 = full.n_train_at_width(64)
    assert n64 * 32 == pytest.approx(20 * full.net.param_count(64), abs=32)
    tiny = token_settings(quick=True).replace(
        widths=(8, 16),
        tokens_per_param=1,
        data_sizes=(64, 128),
        seeds=1,
        batch_size=32,
        max_extensions=1,
        first_grid_points=3,
        parametrizations=("sp",),
    )
    study = run_study(tiny, str(tmp_path / "cache"), workers=1)
    sizes = {
        r["spec"]["width"]: r["spec"]["n_train"]
        for r in study["runs"]
        if r["spec"]["n_train"] not in (64, 128)
    }
    assert sizes == {w: math.ceil(tiny.net.param_count(w) / 32) for w in (8, 16)}
    paths = write_outputs(study, str(tmp_path / "out"))
    text = open(paths["tokens"]).read()
    assert "| width/adamw/sp | independent |" in text and "Power Lines" in text
    assert open(paths["collapse_figure"], "rb").read(4) == b"\x89PNG"


def test_collapse_curves_put_every_width_on_the_shrink_axis(tmp_path):
    s = StudySettings(
        **dict(
            TINY,
            optimizers=("sgd",),
            parametrizations=("sp",),
            rules=("none",),
            modes=("decoupled",),
        )
    )
    study = run_study(s, str(tmp_path), workers=1)
    chain = study["chains"]["width/sgd/sp"]
    curves = collapse_curves(study, chain, "sgd/sp/decoupled/none")
    lr = s.lr["sgd"]
    for cv, p in zip(curves, chain["points"]):
        a = p["arms"]["sgd/sp/decoupled/none"]
        assert cv["x"] == pytest.approx([lam * lr for lam in a["lams"]])  # c = eta * lambda
        assert cv["zero"] == pytest.approx(sum(p["zero_loss"]) / len(p["zero_loss"]))
        assert all(
            lo <= m <= hi for lo, m, hi in zip(cv["low"], cv["mean"], cv["high"]) if m is not None
        )
    # a runs.json from before issue 18 (no verdicts in its summaries) gets them on --replot
    import json

    from scaled_decay.transfer.report import load_study, to_strict_json

    old = to_strict_json(study)
    for c in old["chains"].values():
        for r in c["summary"].values():
            del r["verdict"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "runs.json").write_text(json.dumps(old))
    assert load_study(str(tmp_path / "old"))["chains"] == to_strict_json(study)["chains"]
    data = collapse_curves(study, study["chains"]["data/sgd/sp"], "sgd/sp/decoupled/none")
    p = study["chains"]["data/sgd/sp"]["points"][-1]
    steps = math.ceil(p["n_train"] / s.batch_size)
    assert data[-1]["x"][0] == pytest.approx(
        p["arms"]["sgd/sp/decoupled/none"]["lams"][0] * lr * steps
    )  # per epoch on the data axis


def _summary_row(mode, rule, drift, verdict, seeds=5):
    return {
        "mode": mode,
        "rule": rule,
        "identifiable": True,
        "drift": drift,
        "drift_low": drift - 0.3,
        "drift_high": drift + 0.3,
        "verdict": verdict,
        "seeds": seeds,
        "censored": 0,
        "points": 11,
        "reason": None,
    }


def _fake_study(arch, rows):
    return {
        "settings": {"arch": arch, "widths": [16, 128], "data_sizes": [1, 2]},
        "chains": {"width/adamw/mup": {"summary": {str(i): r for i, r in enumerate(rows)}}},
    }


def test_recommendation_is_computed_from_the_studies_verdicts():
    from scaled_decay.transfer.recommend import recommendation_table

    agree = {
        "a": _fake_study(
            "mlp",
            [
                _summary_row("independent", "none", 0.1, "holds"),
                _summary_row("decoupled", "none", 2.0, "does not hold"),
            ],
        ),
        "b": _fake_study(
            "transformer",
            [
                _summary_row("independent", "none", -0.2, "holds"),
                _summary_row("decoupled", "none", 0.4, "holds"),
            ],
        ),
    }
    row = next(l for l in recommendation_table(agree).splitlines() if l.startswith("| AdamW, muP"))
    assert "| `none`, independent |" in row and row.endswith("| holds |")
    assert "mlp 16→128: +0.10 [-0.20, +0.40] holds (5 seeds, 0 censored, 11 pts)" in row
    assert "`FanIn(power=-1)`" not in row  # an arm no study ran is not cited
    agree["b"]["chains"]["width/adamw/mup"]["summary"]["0"] = _summary_row(
        "independent", "none", 1.4, "unresolved"
    )
    row = next(l for l in recommendation_table(agree).splitlines() if l.startswith("| AdamW, muP"))
    assert row.endswith("| unresolved (mlp 16→128: holds; transformer 16→128: unresolved) |"), row
    agree["b"]["chains"]["width/adamw/mup"]["summary"]["0"] = _summary_row(
        "independent", "none", 1.4, "does not hold"
    )  # a measured verdict each, and they differ; the candidate fails somewhere all the same
    row = next(l for l in recommendation_table(agree).splitlines() if l.startswith("| AdamW, muP"))
    assert "| none of these (each does not hold somewhere) |" in row, row
    assert row.endswith(
        "| arms disagree (mlp 16→128: holds; transformer 16→128: does not hold) |"
    ), row
    # within 2x on every study: a common verdict, not a disagreement
    agree["b"]["chains"]["width/adamw/mup"]["summary"]["0"] = _summary_row(
        "independent", "none", -0.5, "holds within 2x"
    )
    row = next(l for l in recommendation_table(agree).splitlines() if l.startswith("| AdamW, muP"))
    assert "| `none`, independent |" in row and row.endswith("| holds within 2x |")


def test_a_measured_verdict_beats_one_an_arm_could_not_identify():
    # Both candidates' worst verdict is "unresolved"; the one measured to hold within 2x on
    # the other study is recommended over the one that study could not identify, although
    # the latter's only drift is smaller.
    from scaled_decay.transfer.recommend import recommendation_table

    blind = _summary_row("decoupled", "none", 0.0, "unresolved")
    blind.update(identifiable=False, reason="decay does not help at n=128")
    studies = {
        "a": _fake_study(
            "mlp",
            [
                _summary_row("independent", "none", -1.2, "unresolved"),
                _summary_row("decoupled", "none", 0.4, "unresolved"),
            ],
        ),
        "b": _fake_study(
            "transformer", [_summary_row("independent", "none", -0.3, "holds within 2x"), blind]
        ),
    }
    row = next(
        l for l in recommendation_table(studies).splitlines() if l.startswith("| AdamW, muP")
    )
    assert "| `none`, independent |" in row, row
    assert "transformer 16→128: not identifiable (decay does not help at n=128)" in row


def test_recommend_cli_reads_study_folders(tmp_path, capsys):
    import json

    from scaled_decay.transfer.recommend import main

    study = _fake_study("mlp", [_summary_row("independent", "none", 0.1, "holds")])
    (tmp_path / "runs.json").write_text(json.dumps(study))
    assert main([str(tmp_path)]) == 0
    assert "| AdamW, muP, across width | `none`, independent |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and "cannot read a study" in capsys.readouterr().err


def test_joint_replot_redraws_the_table_and_figure_from_joint_json(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from scaled_decay.transfer.cli import main
    from scaled_decay.transfer.joint import joint_table

    recorded = Path(__file__).resolve().parents[2] / "benchmarks/transfer_study/results/joint-mlp"
    shutil.copy(recorded / "joint.json", tmp_path / "joint.json")
    assert main(["--joint", "--replot", "--out", str(tmp_path)]) == 0
    joint = json.loads((tmp_path / "joint.json").read_text())
    assert (tmp_path / "joint.md").read_text().strip() == joint_table(joint).strip()
    assert (tmp_path / "joint.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        main(["--joint", "--replot", "--out", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "joint.json" in capsys.readouterr().err
