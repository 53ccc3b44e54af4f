"""The command line: info reports the BLAS, the quickstart script runs, errors are one line."""

import subprocess
import sys
from pathlib import Path

from mlxinterp.cli import main


def test_info_prints_versions_device_and_blas(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("mlxinterp", "mlx ", "mlx-lm", "device", "blas", "GFLOP/s"):
        assert key in out


def test_the_quickstart_script_runs_and_vmap_matches_the_loop():
    script = Path(__file__).resolve().parents[1] / "scripts" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert "zero-ablating" in out
    assert "max |vmapped - Python loop| = 0.00e+00" in out


def test_bad_arguments_exit_non_zero_with_usage():
    r = subprocess.run(
        [sys.executable, "-m", "mlxinterp", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "invalid choice" in r.stderr


def test_an_error_inside_a_command_is_one_clear_line(capsys):
    assert main(["generate", "--model", "nobody/none", "--max-tokens", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlxinterp generate: error:" in err[0]
