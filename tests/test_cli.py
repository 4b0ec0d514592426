import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mixboot as mb
from mixboot.cli import main


def test_fit_command(tmp_path, capsys):
    path = tmp_path / "d.csv"
    mb.datasets.load("reaction").to_csv(path, index=False)
    assert main(["fit", str(path), "Reaction ~ Days + (Days | Subject)", "--ml"]) == 0
    out = capsys.readouterr().out
    assert "Fixed effects" in out and "maximum likelihood" in out


def test_boot_command_saves(tmp_path, capsys):
    path = tmp_path / "d.csv"
    mb.datasets.load("crossed").to_csv(path, index=False)
    out_file = tmp_path / "b.parquet"
    assert (
        main(
            [
                "boot",
                str(path),
                "diameter ~ 1 + (1|plate) + (1|sample)",
                "-B",
                "50",
                "--seed",
                "1",
                "--out",
                str(out_file),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "shortest lower" in out and out_file.exists()
    assert mb.BootResult.load(out_file).B == 50


def test_bad_column_is_an_error(tmp_path, capsys):
    path = tmp_path / "d.csv"
    mb.datasets.load("crossed").to_csv(path, index=False)
    assert main(["fit", str(path), "nope ~ 1 + (1|plate)"]) == 2
    assert "nope" in capsys.readouterr().err


def test_demo_console_script():
    exe = Path(sys.executable).parent / "mixboot"
    cmd = (
        [str(exe), "demo", "-B", "100"]
        if exe.exists()
        else [sys.executable, "-m", "mixboot.cli", "demo", "-B", "100"]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "percentile" in proc.stdout.lower() or "perc lower" in proc.stdout


# --------------------------------------------------------------------------- power
POWER_JSON = {
    "formula": "y ~ treatment + (1|subject)",
    "nested": {"groups": 40, "per_group": 5, "between": {"treatment": [0, 1]}, "group": "subject"},
    "beta": {"(Intercept)": 0, "treatment": 0.5},
    "sigma": 1,
    "re": {"subject": 1},
    "test": "treatment",
}

POWER_TOML = """
formula = "y ~ cond + (1 | subject) + (1 | item)"
test = "cond"
sigma = 1.0
beta = {"(Intercept)" = 0.0, "condb" = 0.2, "condc" = 0.3}

[design.crossed]
subjects = 20
items = 6
within = {cond = ["a", "b", "c"]}

[re]
subject = 0.6
item = 0.4
"""


def _power_file(tmp_path, **changes):
    path = tmp_path / "power.json"
    path.write_text(json.dumps({**POWER_JSON, **changes}))
    return path


def test_power_command_json(tmp_path, capsys):
    path = _power_file(tmp_path)
    assert main(["power", "--design", str(path), "--nsim", "200", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    model = mb.model(
        POWER_JSON["formula"],
        mb.design.nested(**POWER_JSON["nested"]),
        beta=POWER_JSON["beta"],
        sigma=1,
        re={"subject": 1},
    )
    expected = mb.power(model, "treatment", nsim=200, seed=1)
    assert out.strip() == expected.summary()
    assert f"power: {expected.power:.4f}" in out


def test_power_command_flags_override_the_file(tmp_path, capsys):
    path = _power_file(tmp_path, formula="y ~ x + (1|subject)", test="x", nsim=5)
    assert (
        main(
            [
                "power",
                "--design",
                str(path),
                "--formula",
                POWER_JSON["formula"],
                "--test",
                "treatment",
                "--nsim",
                "50",
                "--seed",
                "2",
                "--alpha",
                "0.1",
                "--method",
                "lrt",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "likelihood-ratio" in out and "alpha = 0.1" in out and "nsim 50" in out


def test_power_command_curve_toml(tmp_path, capsys):
    pytest.importorskip("tomllib")
    path = tmp_path / "power.toml"
    path.write_text(POWER_TOML)
    assert (
        main(
            [
                "power",
                "--design",
                str(path),
                "--nsim",
                "60",
                "--seed",
                "3",
                "--sizes",
                "10,20",
                "--along",
                "subject",
                "--jobs",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Power curve along 'subject'" in out and "test of 'cond'" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in ("10", "20")]
    assert [r[0] for r in rows] == ["10", "20"]
    assert all(0 <= float(r[1]) <= 1 for r in rows)


def test_power_command_csv_design(tmp_path, capsys):
    data = mb.design.nested(groups=30, per_group=4, between={"treatment": [0, 1]}, group="subject")
    data.to_csv(tmp_path / "design.csv", index=False)
    config = {k: v for k, v in POWER_JSON.items() if k != "nested"} | {"csv": "design.csv"}
    path = tmp_path / "power.json"
    path.write_text(json.dumps(config))
    assert main(["power", "--design", str(path), "--nsim", "20", "--seed", "4"]) == 0
    assert "120 observations" in capsys.readouterr().out


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(test="nope"), "names no fixed-effect coefficient or term"),
        (dict(sigma=-1), "sigma must be a positive number"),
        (dict(re=None, nsim=5), "random effects are missing"),
        (dict(nsim=0), "nsim must be an integer >= 1"),
        (dict(alpha=0), "alpha must be a number between 0 and 1"),
        (dict(crossed={"subjects": 4, "items": 2}), "exactly one design"),
        (dict(colour="red"), r"unknown setting\(s\) \['colour'\]"),
    ],
)
def test_power_command_errors(tmp_path, capsys, changes, message):
    path = _power_file(tmp_path, **changes)
    assert (
        main(
            ["power", "--design", str(path), "--nsim", "5"]
            if "nsim" not in changes
            else ["power", "--design", str(path)]
        )
        == 2
    )
    assert re.search(message, capsys.readouterr().err)


def test_power_command_missing_settings(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"nested": POWER_JSON["nested"], "sigma": 1}))
    assert main(["power", "--design", str(path)]) == 2
    err = capsys.readouterr().err
    assert "formula" in err and "test" in err and "beta" in err and "re (or theta)" in err
    with pytest.raises(SystemExit, match="not found"):
        main(["power", "--design", str(tmp_path / "absent.json")])


# --------------------------------------------------------------------------- bad options
@pytest.fixture
def no_work(monkeypatch):
    """Any reading, fitting or simulating fails the test: bad options must stop before."""
    import mixboot.cli as cli

    def boom(*args, **kwargs):
        raise AssertionError("the command did work before refusing a bad option")

    for name in ("fit", "bootMer", "model", "power", "power_curve"):
        monkeypatch.setattr(mb, name, boom)
    monkeypatch.setattr(cli, "_read", boom)
    monkeypatch.setattr(cli, "_load_config", boom)


def _refused(argv, capsys, option):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "mixboot: error:" in err and option in err, err
    return err


BOOT = ["boot", "data.csv", "y ~ 1 + (1|g)"]
POWER = ["power", "--design", "power.json"]


@pytest.mark.parametrize("command", [BOOT, ["demo"]])
@pytest.mark.parametrize(
    "flags, option",
    [
        (["-B", "0"], "-B"),
        (["-B", "-5"], "-B"),
        (["--jobs", "0"], "--jobs"),
        (["--jobs", "-2"], "--jobs"),
        (["--seed", "-1"], "--seed"),
        (["--level", "1.5"], "--level"),
        (["--level", "0"], "--level"),
        (["--level", "1"], "--level"),
        (["--level", "nan"], "--level"),
        (["--tol", "0"], "--tol"),
        (["--tol", "2"], "--tol"),
        (["--scheduler", "not an address"], "--scheduler"),
        (["--scheduler", "tcp://localhost:8786", "--jobs", "2"], "--jobs"),
        (["--scheduler", "localhost:8786", "--jobs", "-1"], "--scheduler"),
    ],
)
def test_bad_boot_option_exits_2_before_any_work(no_work, capsys, command, flags, option):
    _refused(command + flags, capsys, option)


@pytest.mark.parametrize(
    "flags, option",
    [
        (["--nsim", "0"], "--nsim"),
        (["--alpha", "0"], "--alpha"),
        (["--alpha", "1.2"], "--alpha"),
        (["--pb-B", "0"], "--pb-B"),
        (["--seed", "-3"], "--seed"),
        (["--jobs", "0"], "--jobs"),
        (["--sizes", "10,0"], "--sizes"),
        (["--scheduler", "tcp://127.0.0.1:8786", "--jobs", "2"], "--jobs"),
    ],
)
def test_bad_power_option_exits_2_before_any_work(no_work, capsys, flags, option):
    _refused(POWER + flags, capsys, option)


@pytest.mark.parametrize("command", [BOOT, ["demo"]])
def test_out_into_a_missing_directory(no_work, capsys, tmp_path, command):
    target = tmp_path / "no" / "such" / "b.parquet"
    err = _refused(command + ["--out", str(target)], capsys, "--out")
    assert "does not exist" in err
    assert not target.parent.exists()


def test_out_that_is_a_directory(no_work, capsys, tmp_path):
    err = _refused(BOOT + ["--out", str(tmp_path)], capsys, "--out")
    assert "is a directory" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_into_a_read_only_directory(no_work, capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        err = _refused(BOOT + ["--out", str(folder / "b.parquet")], capsys, "--out")
        assert "not writable" in err
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("command", [BOOT, ["demo"], POWER])
def test_checkpoint_under_a_missing_directory(no_work, capsys, tmp_path, command):
    err = _refused(
        command + ["--checkpoint", str(tmp_path / "absent" / "ckpt")], capsys, "--checkpoint"
    )
    assert "does not exist" in err


def test_checkpoint_that_is_a_file(no_work, capsys, tmp_path):
    path = tmp_path / "ckpt"
    path.write_text("")
    _refused(BOOT + ["--checkpoint", str(path)], capsys, "--checkpoint")


def test_checks_are_made_in_process_quickly(no_work, capsys):
    # The refusal costs parsing only, not the default 1000 replicates.
    start = time.perf_counter()
    _refused(["demo", "--level", "1.5"], capsys, "--level")
    assert time.perf_counter() - start < 2


def test_good_options_reach_the_run(monkeypatch, tmp_path, capsys):
    # A checkpoint directory yet to be made, in a writable parent, is accepted and
    # reaches the run; without --scheduler there is no client.
    seen = []

    def fake_boot(result, **kwargs):
        seen.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(mb, "bootMer", fake_boot)
    path = tmp_path / "d.csv"
    mb.datasets.load("crossed").to_csv(path, index=False)
    formula = "diameter ~ 1 + (1|plate) + (1|sample)"
    ckpt = tmp_path / "ckpt"
    assert main(["boot", str(path), formula, "-B", "5", "--checkpoint", str(ckpt)]) == 2
    assert (
        main(
            [
                "boot",
                str(path),
                formula,
                "-B",
                "5",
                "--jobs",
                "-1",
                "--out",
                str(tmp_path / "b.parquet"),
            ]
        )
        == 2
    )
    assert seen[0]["checkpoint"] == str(ckpt) and seen[0]["client"] is None
    assert seen[1]["checkpoint"] is None and seen[1]["client"] is None
    assert seen[1]["n_jobs"] == -1
    assert "stop here" in capsys.readouterr().err


def test_scheduler_without_dask(no_work, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails
    err = _refused(BOOT + ["--scheduler", "tcp://localhost:8786"], capsys, "--scheduler")
    assert "pip install 'mixboot[dask]'" in err
