import json

import pytest

from alexnet_core.cli import main
from tests import helpers


def run_cli(*args):
    return helpers.cli(*args, timeout=300)


def test_summary_json_reproduces_the_paper():
    result = run_cli("summary", "paper", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert doc["total_params"] == 60_965_224 and doc["total_macs"] == 724_406_816
    assert doc["input_shape"] == [227, 227, 3] and doc["num_classes"] == 1000


def test_bad_input_exits_2_without_traceback():
    result = run_cli("summary", "paper", "--input-size", "32")
    assert result.returncode == 2
    assert "input_size must be >= 67 for 'paper', got 32" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("name, params", [("paper-ungrouped", 62_378_344), ("two-tower", 56_910_602),
                                          ("cifar-bn", 25_730_506), ("torchvision", 61_100_840)])
def test_summary_json_in_process(name, params, capsys):
    assert main(["summary", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == params


def test_summary_switches(capsys):
    assert main(["summary", "paper", "--no-groups", "--num-classes", "10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["num_classes"] == 10
    assert {l["name"]: l["params"] for l in doc["layers"]}["conv2"] == 614_656


def test_summary_text(capsys):
    assert main(["summary", "compact"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "total params 1,933,482" in out


def test_variants(capsys):
    assert main(["variants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["paper", "paper-ungrouped", "two-tower", "cifar-bn", "torchvision",
                                        "compact", "compact-hires"]
    assert main(["variants"]) == 0
    assert "Krizhevsky" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["summary", "nope"], ["summary", "compact", "--num-classes", "0"],
                                  ["summary", "compact", "--dropout", "2"]])
def test_usage_errors(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_command_is_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_a_reader_that_stops_early_gets_no_traceback():
    """`python -m alexnet_core claims --markdown | head -1`: the pipe closes while the command still
    has to write, and the command ends quietly, as `cat` would."""
    import subprocess
    import sys
    from pathlib import Path

    process = subprocess.Popen([sys.executable, "-m", "alexnet_core", "claims", "--markdown"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    process.stdout.close()  # the reader is gone before the command writes its first line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
