"""The main job: `mlxinterp demo` writes a self-contained report that a browser renders with
every image and no JavaScript error; the CLI commands explain themselves and fail in one line."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from mlxinterp.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlxinterp",
            "demo",
            "--out",
            str(out),
            "--tuned-steps",
            "60",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_demo_summarises_the_three_workflows_and_writes_a_self_contained_report(report):
    path, stdout = report
    for key in ("lens:", "patching:", "steering:", "report:"):
        assert key in stdout
    html = path.read_text()
    assert "http://" not in html and "https://" not in html  # opens with no network
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", html)) >= 6


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium_with_all_images(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium here (make test installs Debian's chromium when run as root)")
    path, _ = report
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    url = path.resolve().as_uri()
    shot = tmp_path / "report.png"
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1100,2400", url],
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, env=env
    ).stdout
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    # the page's own script: 'report-ok:N' when every image decoded and no JS error fired
    assert title.startswith("report-ok:"), title
    assert int(title.split(":")[1]) >= 6


@pytest.mark.parametrize(
    "command", ["info", "demo", "lens", "patch", "attribute", "steer", "generate"]
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mlxinterp " + command in out
    if command != "info":
        assert "--model" in out and "--out" in out


def test_commands_run_on_tinyworld(capsys, tmp_path):
    assert main(["lens", "--out", str(tmp_path / "lens.png")]) == 0
    out = capsys.readouterr().out
    assert "resid_post.3" in out and "'Paris'" in out and (tmp_path / "lens.png").exists()
    assert main(["patch", "-k", "2"]) == 0
    assert "activation patching" in capsys.readouterr().out
    assert main(["attribute", "-k", "2"]) == 0
    assert main(["generate", "--max-tokens", "2"]) == 0
    assert "The capital of France is Paris" in capsys.readouterr().out
    assert main(["steer", "--scale", "0", "--max-tokens", "3"]) == 0


def test_errors_are_one_line_with_a_non_zero_exit(capsys):
    assert main(["lens", "--model", "./missing-folder"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlxinterp lens: error:")
    assert main(["patch", "--corrupt", "The capital of the big country Japan is"]) == 1
    assert "equal token length" in capsys.readouterr().err
