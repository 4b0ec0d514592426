import subprocess
import sys
from pathlib import Path

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
    assert main(["boot", str(path), "diameter ~ 1 + (1|plate) + (1|sample)", "-B", "50",
                 "--seed", "1", "--out", str(out_file)]) == 0
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
    cmd = [str(exe), "demo", "-B", "100"] if exe.exists() else \
        [sys.executable, "-m", "mixboot.cli", "demo", "-B", "100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "percentile" in proc.stdout.lower() or "perc lower" in proc.stdout
