"""The paper's claims: verdict rules on run folders written here, matching runs to arms, the
user's runs replacing the bundled ones, the shipped bundle, and the `claims` commands."""

import argparse
import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from alexnet_core import locations
from alexnet_core.analysis import claims
from alexnet_core.store import fileio, layout
from tests import helpers
from tests.helpers import make_image_folder

CLASSES = [f"c{i}" for i in range(10)]


def write_run(root, run_id, config, rows, state="finished", elapsed=60.0):
    """A run folder as the trainer leaves it: config.json (the settings as recorded), metrics.csv
    (one row per epoch, from 0) and status.json."""
    path = Path(root) / run_id
    path.mkdir(parents=True)
    fileio.write_json_atomic(path / layout.CONFIG, {**asdict(config), "class_names": CLASSES,
                                                    "steps_per_epoch": 79})
    epochs = [{"epoch": i, "epoch_seconds": 20.0, **row} for i, row in enumerate(rows)]
    (path / layout.METRICS).write_text(layout.metrics_csv(epochs) if epochs else "")
    fileio.write_json_atomic(path / layout.STATUS, {"state": state, "message": state, "epoch": len(rows),
                                                    "elapsed_s": elapsed, "started": 1.0, "heartbeat": 2.0})
    return path


def final(train, val, epochs=3):
    """Metrics rows whose last epoch has these accuracies."""
    return [{"accuracy": train * (i + 1) / epochs, "val_accuracy": val * (i + 1) / epochs, "loss": 1.0,
             "val_loss": 1.0} for i in range(epochs)]


def arm_config(name, arm, seed):
    return next(config for a, s, config in claims.experiment_configs(name) if a.name == arm and s == seed)


def write_arm(root, name, arm, val_errors, train=0.9, prefix=""):
    """One finished run per seed of an arm, with these final validation errors (fractions)."""
    for seed, error in enumerate(val_errors):
        write_run(root, f"{prefix}{name}-{arm}-{seed}", arm_config(name, arm, seed), final(train, 1 - error))


# The base these tests are written against: the shipped CPU_BASE may be tuned without changing them.
TEST_BASE = {
    "variant": "compact",
    "switches": {"width": 0.25, "norm": "lrn", "groups": False, "overlapping_pool": True, "dropout": 0.5,
                 "activation": "relu", "remove_conv": 0},
    "epochs": 15, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.02, "schedule": "cosine",
    "augment": "paper", "train_per_class": 1000, "val_split": 0.1, "mixed_precision": "off", "data": "cifar10",
}


@pytest.fixture(autouse=True)
def fixed_base(request, monkeypatch):
    """Every test but the shipped bundle's runs against TEST_BASE."""
    if "shipped_bundle" not in request.fixturenames:
        monkeypatch.setattr(claims, "CPU_BASE", TEST_BASE)


@pytest.fixture
def shipped_bundle():
    """The bundled claims' folder, read with the shipped CPU_BASE."""
    return Path(locations.CLAIMS_DIR)


@pytest.fixture
def no_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(locations, "CLAIMS_DIR", tmp_path / "no-bundle")
    return tmp_path / "runs"


# --- The claims and their experiments ------------------------------------------------------


def test_seven_claims_quote_the_paper_with_sections():
    assert list(claims.CLAIMS) == ["relu", "lrn", "overlapping-pool", "dropout", "augmentation", "groups", "depth"]
    assert [c.number for c in claims.CLAIMS.values()] == list(range(1, 8))
    relu = claims.CLAIMS["relu"]
    assert relu.quote.startswith("A four-layer convolutional neural network with ReLUs (solid line) reaches a 25% "
                                 "training error rate on CIFAR-10 six times faster")
    assert relu.threshold == 0.25 and relu.section == "Section 3.1, Figure 1"
    assert claims.CLAIMS["depth"].section == "Section 7 (Discussion)"
    for claim in claims.CLAIMS.values():
        assert claim.measures and all(a.label for a in claim.arms) and "CIFAR-10" in claim.differs


def test_arms_differ_from_the_base_in_their_switch_only_and_share_seeds():
    configs = claims.experiment_configs("lrn")
    assert [(a.name, s) for a, s, _ in configs] == [("lrn", 0), ("none", 0), ("lrn", 1), ("none", 1), ("lrn", 2),
                                                    ("none", 2)]
    with_lrn, without = asdict(configs[0][2]), asdict(configs[1][2])
    assert {k for k in with_lrn if with_lrn[k] != without[k]} == {"switches"}
    assert {k for k, v in with_lrn["switches"].items() if without["switches"][k] != v} == {"norm"}
    base = configs[0][2]
    assert (base.variant, base.epochs, base.train_per_class, base.data) == ("compact", 15, 1000, "cifar10")
    # the relu claim has no regularisation, as the paper's Figure 1
    relu, tanh = (c for _, _, c in claims.experiment_configs("relu", seeds=(0,)))
    assert relu.switches["dropout"] == 0 and relu.augment == "none" and tanh.switches["activation"] == "tanh"
    # the groups claim's one-GPU net has half the kernels
    grouped, half = (c for _, _, c in claims.experiment_configs("groups", seeds=(0,)))
    assert grouped.switches["groups"] and not half.switches["groups"]
    assert half.switches["width"] == grouped.switches["width"] / 2


def test_claims_2_to_7_share_the_base_arm():
    base = claims.canonical(asdict(arm_config("lrn", "lrn", 0)))
    for name, arm in (("overlapping-pool", "overlapping"), ("dropout", "dropout"), ("augmentation", "paper"),
                      ("depth", "all")):
        assert claims.canonical(asdict(arm_config(name, arm, 0))) == base


def test_the_gpu_size_needs_a_folder_and_is_scaled_as_asked(tmp_path):
    with pytest.raises(claims.ClaimError, match="ImageNet-layout folder"):
        claims.experiment_configs("lrn", size="gpu")
    configs = claims.experiment_configs("lrn", size="gpu", data=str(tmp_path), epochs=4, train_per_class=50)
    config = configs[0][2]
    assert (config.variant, config.epochs, config.train_per_class, config.data) == ("paper", 4, 50, str(tmp_path))
    with pytest.raises(claims.ClaimError, match="No claim 'nope'. The claims: relu, lrn"):
        claims.experiment_configs("nope")
    with pytest.raises(claims.ClaimError, match="not a training setting"):
        claims.experiment_configs("lrn", speed=3)


# --- Per-run measures -----------------------------------------------------------------------


def frame(accuracies, val=None):
    import pandas as pd

    data = {"epoch": list(range(1, len(accuracies) + 1)), "accuracy": accuracies}
    if val is not None:
        data["val_accuracy"] = val
    return pd.DataFrame(data)


def test_epochs_to_25_percent_error_is_interpolated_and_censored():
    # error after epochs 1, 2, 3: 0.6, 0.3, 0.2 -> 25% is crossed halfway between epochs 2 and 3
    assert claims.epochs_to_error(frame([0.4, 0.7, 0.8]), 0.25) == (2.5, False)
    # crossed during the first epoch: from chance (0.9) to 0.1
    assert claims.epochs_to_error(frame([0.9]), 0.25) == (pytest.approx(0.8125), False)
    # never reached in 3 epochs: a lower bound of 3
    assert claims.epochs_to_error(frame([0.3, 0.5, 0.6]), 0.25) == (3.0, True)


def test_convergence_gap_and_validation_error():
    metrics = frame([0.5, 0.8, 0.95], val=[0.5, 0.695, 0.70])
    assert claims.epochs_to_converge(metrics) == (2.0, False)  # 0.695 is within a point of 0.70
    assert claims.train_val_gap(metrics)[0] == pytest.approx(25.0)
    assert claims.validation_error(metrics)[0] == pytest.approx(30.0)


# --- Verdicts -------------------------------------------------------------------------------


def test_a_clear_effect_in_the_papers_direction_agrees(no_bundle):
    write_arm(no_bundle, "lrn", "lrn", [0.300, 0.302, 0.298])
    write_arm(no_bundle, "lrn", "none", [0.330, 0.331, 0.329])
    result = claims.verdict("lrn")
    assert result["verdict"] == "agrees" and result["source"] == "yours"
    assert result["effect"] == pytest.approx(3.0) and result["se"] == pytest.approx(0.13, abs=0.01)
    assert result["arms"]["lrn"]["n"] == 3 and result["arms"]["lrn"]["mean"] == pytest.approx(30.0)
    assert result["ours"] == ("validation error 30.0% ± 0.2 with LRN, 33.0% ± 0.1 without normalisation (3 seeds "
                              "each): 3.0 points lower with LRN; agrees (2 SE = 0.3 points)")
    assert len(result["runs"]) == 6 and result["seconds"] == pytest.approx(360.0)
    json.dumps(result)


def test_the_opposite_direction_disagrees(no_bundle):
    write_arm(no_bundle, "depth", "all", [0.35, 0.36, 0.34])
    write_arm(no_bundle, "depth", "no-conv3", [0.30, 0.31, 0.29])
    result = claims.verdict("depth")
    assert result["verdict"] == "disagrees" and result["effect"] == pytest.approx(-5.0)
    assert "disagrees: the opposite direction" in result["ours"]


def test_a_difference_under_two_standard_errors_is_within_noise(no_bundle):
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.34, 0.32])
    write_arm(no_bundle, "lrn", "none", [0.31, 0.35, 0.33])  # 1 point, sd 2 each: 2 SE = 3.3
    result = claims.verdict("lrn")
    assert result["verdict"] == "within noise" and result["effect"] == pytest.approx(1.0)
    assert result["ours"].endswith("within noise (2 SE = 3.3 points)")


def test_a_weak_effect_is_not_rounded_into_agreement(no_bundle):
    # 0.3 points, clearly above its noise, against the paper's 2: agrees in direction only, and says so
    write_arm(no_bundle, "lrn", "lrn", [0.3000, 0.3001, 0.2999])
    write_arm(no_bundle, "lrn", "none", [0.3030, 0.3031, 0.3029])
    result = claims.verdict("lrn")
    assert result["verdict"] == "agrees"
    assert "agrees in direction; 0.3 points against the paper's 2" in result["ours"]


def test_fewer_than_two_finished_seeds_are_too_few_and_none_is_not_run_yet(no_bundle):
    assert claims.verdict("lrn")["verdict"] == "not run yet"
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31])
    write_arm(no_bundle, "lrn", "none", [0.33])
    write_run(no_bundle, "training", arm_config("lrn", "none", 1), final(0.5, 0.5), state="queued")
    result = claims.verdict("lrn")
    assert result["verdict"] == "too few runs" and result["effect"] is None
    assert result["arms"]["none"]["n"] == 1 and result["yours"]["pending"] == ["training"]


def test_a_seed_trained_twice_is_one_sample(no_bundle):
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31])
    write_arm(no_bundle, "lrn", "none", [0.33])
    write_arm(no_bundle, "lrn", "none", [0.34], prefix="again-")  # seed 0 again: not a second seed
    result = claims.verdict("lrn")
    assert result["verdict"] == "too few runs" and result["arms"]["none"]["runs"] == ["again-lrn-none-0"]
    assert "again-lrn-none-0" in result["runs"] and "lrn-none-0" not in result["runs"]


def relu_rows(errors):
    return [{"accuracy": 1 - e, "val_accuracy": 0.5, "loss": 1.0, "val_loss": 1.0} for e in errors]


def test_relu_reports_the_ratio_of_epochs_to_25_percent_error(no_bundle):
    for seed in range(3):
        write_run(no_bundle, f"relu-{seed}", arm_config("relu", "relu", seed), relu_rows([0.5, 0.2 + seed * 0.01]))
        write_run(no_bundle, f"tanh-{seed}", arm_config("relu", "tanh", seed),
                  relu_rows([0.8, 0.6, 0.45, 0.3 + seed * 0.01, 0.2, 0.1]))
    result = claims.verdict("relu")
    assert result["verdict"] == "agrees" and result["ratio"] == pytest.approx(2.4, abs=0.1)
    assert "with tanh it takes 2.4x as long" in result["ours"]
    assert "agrees in direction; 2.4x against the paper's 6x" in result["ours"]


def test_relu_a_tanh_run_that_never_reaches_25_percent_is_a_lower_bound(no_bundle):
    for seed in range(3):
        write_run(no_bundle, f"relu-{seed}", arm_config("relu", "relu", seed), relu_rows([0.5, 0.2 + seed * 0.01]))
        write_run(no_bundle, f"tanh-{seed}", arm_config("relu", "tanh", seed), relu_rows([0.8, 0.6, 0.5, 0.4]))
    result = claims.verdict("relu")
    assert result["arms"]["tanh"]["censored"] == [True, True, True]
    assert "not reached in 4 epochs with tanh" in result["ours"] and "it takes >= 2.1x as long" in result["ours"]
    assert result["verdict"] == "agrees" and "at least 2.1x against the paper's 6x" in result["ours"]


def test_relu_that_never_reaches_25_percent_gives_no_agreement(no_bundle):
    for seed in range(3):
        write_run(no_bundle, f"relu-{seed}", arm_config("relu", "relu", seed), relu_rows([0.5, 0.4 + seed * 0.01]))
        write_run(no_bundle, f"tanh-{seed}", arm_config("relu", "tanh", seed), relu_rows([0.6, 0.5]))
    result = claims.verdict("relu")
    assert result["verdict"] == "within noise" and "train for more epochs" in result["ours"]


def test_second_parts_have_their_own_verdicts(no_bundle):
    # dropout: a smaller gap with it (agrees) and the same convergence epoch (within noise... or too few)
    for seed in range(3):
        write_run(no_bundle, f"d-{seed}", arm_config("dropout", "dropout", seed), final(0.80 + seed * 0.001, 0.70))
        write_run(no_bundle, f"n-{seed}", arm_config("dropout", "no-dropout", seed), final(0.95 + seed * 0.001, 0.68))
    result = claims.verdict("dropout")
    assert result["verdict"] == "agrees" and result["effect"] == pytest.approx(17.0)
    assert result["ours"].startswith("train-validation gap 10.1 ± 0.1 points with dropout 0.5, 27.1 ± 0.1 points "
                                     "without dropout (3 seeds each)")
    [converge] = result["parts"]
    assert converge["title"] == "epochs to converge" and converge["quote"].startswith("Dropout roughly doubles")
    assert converge["verdict"] == "within noise"  # every run converges at its last epoch here: no difference


# --- Matching runs to arms -------------------------------------------------------------------


def test_a_run_that_differs_in_one_more_setting_does_not_match(no_bundle):
    from alexnet_core.settings.config import TrainConfig

    config = asdict(arm_config("lrn", "none", 0))
    write_run(no_bundle, "matches", TrainConfig(**{**config, "recipe": "quick", "log_every": 3,
                                                   "data": "/elsewhere/cifar10"}), final(0.9, 0.6))
    write_run(no_bundle, "other-lr", TrainConfig(**{**config, "learning_rate": 0.05}), final(0.9, 0.6))
    write_run(no_bundle, "other-switch", TrainConfig(**{**config, "switches": {**config["switches"],
                                                                               "dropout": 0.3}}), final(0.9, 0.6))
    found = claims.matching_runs("lrn")
    assert [r["run_id"] for r in found["none"]] == ["matches"] and found["lrn"] == []


def test_a_run_recorded_with_fewer_switches_matches_by_what_they_build(no_bundle):
    from alexnet_core.settings.config import TrainConfig

    config = asdict(arm_config("depth", "all", 0))
    minimal = {k: v for k, v in config["switches"].items() if k not in ("activation", "remove_conv")}
    write_run(no_bundle, "minimal", TrainConfig(**{**config, "switches": minimal}), final(0.9, 0.6))
    assert [r["run_id"] for r in claims.matching_runs("depth")["all"]] == ["minimal"]


def test_runs_are_shared_between_claims(no_bundle):
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31, 0.32])  # the base arm, queued by the lrn claim
    for name, arm in (("overlapping-pool", "overlapping"), ("dropout", "dropout"), ("augmentation", "paper"),
                      ("depth", "all")):
        assert [r["run_id"] for r in claims.matching_runs(name)[arm]] == ["lrn-lrn-0", "lrn-lrn-1", "lrn-lrn-2"]


def test_the_users_complete_set_replaces_the_bundled_verdict(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    monkeypatch.setattr(locations, "CLAIMS_DIR", bundle)
    write_arm(bundle / "runs", "lrn", "lrn", [0.30, 0.31, 0.32])
    write_arm(bundle / "runs", "lrn", "none", [0.40, 0.41, 0.42])
    yours = tmp_path / "runs"
    write_arm(yours, "lrn", "lrn", [0.30], prefix="mine-")  # one seed of the user's: not a complete set
    result = claims.verdict("lrn")
    assert result["source"] == "bundled" and result["verdict"] == "agrees" and result["yours"]["finished"] == 1
    assert result["runs"] == sorted(p.name for p in (bundle / "runs").iterdir())
    for seed, error in ((1, 0.31), (2, 0.32)):
        write_run(yours, f"mine-lrn-lrn-{seed}", arm_config("lrn", "lrn", seed), final(0.9, 1 - error))
    write_arm(yours, "lrn", "none", [0.301, 0.311], prefix="mine-")
    result = claims.verdict("lrn")
    assert result["source"] == "yours" and result["verdict"] == "within noise"
    assert result["runs"] == sorted(p.name for p in yours.iterdir())
    assert claims.curves("lrn")["source"].unique().tolist() == ["yours"]


def test_curves_hold_every_matching_run_per_epoch(no_bundle):
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31])
    curves = claims.curves("lrn")
    assert list(curves.columns) == list(claims.CURVE_COLUMNS)
    assert len(curves) == 6 and set(curves["arm"]) == {"lrn"} and list(curves["epoch"][:3]) == [1, 2, 3]
    assert curves["val_error"].iloc[2] == pytest.approx(0.30)
    assert set(claims.curves("depth")["arm"]) == {"all"}  # the base arm is shared
    assert claims.curves("relu").empty


def test_the_estimate_comes_from_measured_epochs(no_bundle):
    assert claims.estimate_seconds("lrn")["seconds"] is None
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31])  # 20 s an epoch recorded
    estimate = claims.estimate_seconds("lrn")
    # 4 runs left (lrn seed 2, none 0-2) of 15 epochs at 20 s
    assert estimate["runs"] == 4 and estimate["seconds"] == pytest.approx(4 * 15 * 20.0)
    assert "your runs" in estimate["measured"]
    scaled = claims.estimate_seconds("lrn", epochs=5, train_per_class=500)
    assert scaled["runs"] == 6 and scaled["seconds"] == pytest.approx(6 * 5 * 10.0)


# --- The command line ------------------------------------------------------------------------


@pytest.fixture
def no_trainer(monkeypatch):
    return helpers.without_trainers(monkeypatch)


def claims_command(*argv, capsys):
    """`claims ARGV` in this process: (exit code, stdout, stderr)."""
    from alexnet_core import claims_cli

    parser = argparse.ArgumentParser()
    claims_cli.add_parser(parser.add_subparsers(dest="command"))
    code = claims_cli.run(parser.parse_args(["claims", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_claims_json_lists_every_claim_with_its_figures(no_bundle, capsys):
    write_arm(no_bundle, "lrn", "lrn", [0.300, 0.302, 0.298])
    write_arm(no_bundle, "lrn", "none", [0.330, 0.331, 0.329])
    code, out, _ = claims_command("--json", capsys=capsys)
    listed = json.loads(out)
    assert code == 0 and [c["name"] for c in listed] == list(claims.CLAIMS)
    for claim in listed:
        assert {"name", "section", "quote", "paper", "ours", "verdict", "source", "differs"} <= set(claim)
    assert listed[1]["verdict"] == "agrees" and listed[0]["verdict"] == "not run yet"
    code, out, _ = claims_command("verdict", "lrn", "--json", capsys=capsys)
    assert code == 0 and json.loads(out) == listed[1]
    code, out, _ = claims_command(capsys=capsys)
    assert code == 0 and "2. lrn, Section 3.3: agrees, from your runs" in out and listed[1]["ours"] in out
    code, out, _ = claims_command("verdict", "lrn", capsys=capsys)
    assert code == 0 and claims.CLAIMS["lrn"].quote in out and "differs from the paper" in out
    code, out, _ = claims_command("--markdown", capsys=capsys)  # what docs/CLAIMS.md shows
    assert code == 0 and f"- Ours: {listed[1]['ours']}\n- Verdict: **agrees**" in out
    assert out.count("### ") == 7 and "> " + claims.CLAIMS["relu"].quote in out


def test_an_unknown_claim_exits_2_naming_the_claims(no_bundle, capsys):
    for argv in (("verdict", "relus"), ("run", "relus")):
        code, out, err = claims_command(*argv, capsys=capsys)
        assert code == 2 and out == ""
        assert "No claim 'relus'. The claims: relu, lrn, overlapping-pool, dropout, augmentation, groups, depth" in err
    code, _, err = claims_command("run", "lrn", "--size", "gpu", capsys=capsys)
    assert code == 2 and "ImageNet-layout folder" in err and "Traceback" not in err
    code, _, err = claims_command("run", "lrn", "--size", "gpu", "--data", str(no_bundle.parent), capsys=capsys)
    assert code == 2 and "is not an ImageNet-layout folder: it needs train/<class>/*" in err


def test_claims_run_queues_only_the_missing_runs(tmp_path, no_bundle, no_trainer, capsys):
    from alexnet_core.train import queue

    data = make_image_folder(tmp_path / "images", classes=3, per_class=4)
    write_arm(no_bundle, "lrn", "lrn", [0.30, 0.31])  # seeds 0 and 1 of the base arm: already there
    code, out, err = claims_command("run", "lrn", "--data", str(data), "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    queued = [(r["arm"], r["seed"]) for r in result["queued"]]
    assert queued == [("none", 0), ("none", 1), ("lrn", 2), ("none", 2)]  # seed 0 of every arm first
    assert result["existing"] == 2 and result["runs"] == 6
    assert result["estimate"]["runs"] == 4 and result["estimate"]["seconds"] == pytest.approx(4 * 15 * 20.0)
    # the first went to the free machine; the others wait in order
    assert [r["state"] for r in result["queued"]] == ["started", "queued", "queued", "queued"]
    assert [r["position"] for r in result["queued"]] == [None, 1, 2, 3]
    assert [s["run"] for s in no_trainer] == [result["queued"][0]["run_dir"]]
    assert [e["run_id"] for e in queue.entries()] == [r["run_id"] for r in result["queued"][1:]]
    first = Path(result["queued"][0]["run_dir"])
    assert json.loads((first / layout.LABEL).read_text())["name"] == "Claim 2 (lrn): without normalisation, seed 0"
    recorded = json.loads((first / layout.CONFIG).read_text())
    assert claims.canonical(recorded) == claims.canonical(asdict(arm_config("lrn", "none", 0)))
    # again: every run is finished, queued or training, so nothing more is queued
    code, out, _ = claims_command("run", "lrn", "--data", str(data), capsys=capsys)
    assert code == 0 and "every run of claim lrn's experiment is finished, queued or training" in out
    assert len(queue.entries()) == 3
    # the shared base arm counts for another claim: depth queues its own arm and the base's seed 2
    code, out, _ = claims_command("run", "depth", "--data", str(data), "--json", capsys=capsys)
    assert [(r["arm"], r["seed"]) for r in json.loads(out)["queued"]] == [("no-conv3", 0), ("no-conv3", 1),
                                                                          ("no-conv3", 2)]


def test_the_gpu_size_queues_the_papers_network_on_an_imagenet_folder(tmp_path, no_bundle, no_trainer, capsys):
    data = helpers.make_ilsvrc_folder(tmp_path / "ilsvrc", train=2, val=1)
    code, out, err = claims_command("run", "groups", "--size", "gpu", "--data", str(data), "--epochs", "2",
                                    "--train-per-class", "2", "--seeds", "2", "--json", capsys=capsys)
    assert code == 0, err
    queued = json.loads(out)["queued"]
    assert [(r["arm"], r["seed"]) for r in queued] == [("grouped", 0), ("half", 0), ("grouped", 1), ("half", 1)]
    configs = [json.loads((Path(r["run_dir"]) / layout.CONFIG).read_text()) for r in queued]
    assert {(c["variant"], c["epochs"], c["train_per_class"], c["data"]) for c in configs} == {
        ("paper", 2, 2, str(data))}
    assert [(c["switches"]["groups"], c["switches"]["width"]) for c in configs[:2]] == [(True, 1.0), (False, 0.5)]
    # the verdict of that experiment reads those runs (queued: not run yet), not the CPU size's
    result = claims.verdict("groups", size="gpu", data=str(data), epochs=2, train_per_class=2)
    assert result["verdict"] == "not run yet" and len(result["yours"]["pending"]) == 4
    assert "the paper's network on your data" in result["differs"]
    assert claims.verdict("groups")["yours"]["pending"] == []


def test_claims_run_refuses_bad_data_and_seeds_without_queueing(tmp_path, no_bundle, no_trainer, capsys):
    code, _, err = claims_command("run", "lrn", "--data", str(tmp_path / "nowhere"), capsys=capsys)
    assert code == 2 and "Traceback" not in err and not list(no_bundle.glob("*/config.json"))
    with pytest.raises(SystemExit):
        claims_command("run", "lrn", "--seeds", "1", capsys=capsys)
    assert "from 2 (the fewest a verdict can use)" in capsys.readouterr().err


def test_the_claims_command_is_on_the_command_line():
    result = helpers.cli("claims", "verdict", "nope", timeout=120)
    assert result.returncode == 2 and "The claims: relu, lrn" in result.stderr


# --- The bundled results (issue: "bundled results so it works offline out of the box") ------


BUNDLE_LIMIT = 8 * 2**20


def bundled_verdicts(tmp_path):
    """Every claim's verdict from the bundle alone (an empty runs folder)."""
    return claims.claims_json(tmp_path / "empty-runs")


def test_the_bundle_is_complete_and_within_8_mb(tmp_path, shipped_bundle):
    bundle = shipped_bundle
    assert (bundle / "runs").is_dir(), f"no bundled claims' runs in {bundle}/runs"
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size <= BUNDLE_LIMIT, f"the bundle holds {size / 2**20:.1f} MB, over 8 MB"
    for run in (bundle / "runs").iterdir():
        for name in (layout.CONFIG, layout.METRICS, layout.STATUS):
            assert (run / name).is_file(), f"{run.name} has no {name}"
    for result in bundled_verdicts(tmp_path):
        assert result["source"] == "bundled", result["name"]
        for part in [result, *result["parts"]]:
            assert part["verdict"] in ("agrees", "disagrees", "within noise"), (result["name"], part["ours"])
        found = claims.matching_runs(result["name"], tmp_path / "empty-runs")
        for arm, runs in found.items():
            assert len([r for r in runs if r["state"] == "finished"]) >= claims.MIN_SEEDS, (result["name"], arm)


def test_each_shipped_verdict_recomputes_from_the_shipped_metrics_to_the_same_text(tmp_path, shipped_bundle):
    made = shipped_bundle / "verdicts.json"  # what `claims --json` printed when the bundle was made
    assert made.is_file(), f"no {made}: the bundle's verdicts as `claims --json` printed them"
    shipped = json.loads(made.read_text())
    doc = (locations.ROOT / "docs" / "CLAIMS.md").read_text()
    recomputed = bundled_verdicts(tmp_path)
    assert [c["name"] for c in shipped] == list(claims.CLAIMS)
    for made, now in zip(shipped, recomputed):
        assert {k: v for k, v in made.items() if k != "yours"} == {k: v for k, v in now.items() if k != "yours"}
        for part in [now, *now["parts"]]:
            assert part["ours"] in doc, f"docs/CLAIMS.md does not say {part['ours']!r}"


def test_the_bundle_can_be_pointed_elsewhere(tmp_path):
    """ALEXNET_CLAIMS_DIR: another folder of the claims' measured runs (the browser test's copy)."""
    import sys

    code = "from alexnet_core import locations; print(locations.CLAIMS_DIR)"
    env = {**os.environ, locations.CLAIMS_DIR_ENV: str(tmp_path / "copy")}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                           cwd=locations.ROOT)
    assert shown.stdout.strip() == str(tmp_path / "copy")
    env.pop(locations.CLAIMS_DIR_ENV)
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                           cwd=locations.ROOT)
    assert shown.stdout.strip() == str(locations.ASSETS / "claims")


def test_bundle_ships_the_finished_runs_of_the_experiments_with_their_verdicts(tmp_path, no_bundle, monkeypatch):
    """`claims bundle`: the finished runs that belong to a claim's CPU experiment are copied (settings,
    metrics, status, snapshots; never a model file) with the data named as the experiment names it,
    verdicts.json is what `claims --json` gives from the bundle alone, and the page's verdicts part is
    rewritten between its markers, the rest of the page kept."""
    import dataclasses

    for arm, errors in (("lrn", [0.300, 0.302, 0.298]), ("none", [0.330, 0.331, 0.329])):
        for seed, error in enumerate(errors):
            config = dataclasses.replace(arm_config("lrn", arm, seed), data="/home/someone/cifar10/train")
            run = write_run(no_bundle, f"lrn-{arm}-{seed}", config, final(0.9, 1 - error))
            (run / layout.SNAPSHOTS).mkdir()
            (run / layout.SNAPSHOTS / "epoch-0001.npz").write_bytes(b"npz")
            (run / "model.keras").write_bytes(b"a model")
    unfinished = dataclasses.replace(arm_config("lrn", "lrn", 0), seed=5, data="/home/someone/cifar10/train")
    write_run(no_bundle, "lrn-lrn-5", unfinished, final(0.9, 0.7), state="running")
    other = dataclasses.replace(arm_config("lrn", "lrn", 0), epochs=7)
    write_run(no_bundle, "not-an-arm", other, final(0.9, 0.7, epochs=7))
    docs = tmp_path / "CLAIMS.md"
    docs.write_text(f"# Claims\n\nintro\n\n{claims.DOCS_START}\nold verdicts\n{claims.DOCS_END}\n\nafter\n")
    out = tmp_path / "bundle"

    shipped = claims.bundle(no_bundle, out, docs=docs)

    assert shipped["runs"] == [f"lrn-{arm}-{seed}" for arm in ("lrn", "none") for seed in range(3)]
    assert sorted(p.name for p in (out / "runs").iterdir()) == shipped["runs"]
    first = out / "runs" / "lrn-lrn-0"
    assert not list(out.rglob("*.keras")) and (first / layout.SNAPSHOTS / "epoch-0001.npz").read_bytes() == b"npz"
    assert fileio.read_object(first / layout.CONFIG)["data"] == claims.CPU_BASE["data"]
    assert layout.is_read_only(first)  # the app neither resumes nor deletes a shipped run
    monkeypatch.setattr(locations, "CLAIMS_DIR", out)
    from alexnet_core.store import catalog

    assert catalog.find_run("lrn-none-2", tmp_path / "empty-runs") == out / "runs" / "lrn-none-2"
    listed = {r["run_id"]: r for r in catalog.all_runs(tmp_path / "empty-runs", claims=True)}
    assert set(shipped["runs"]) <= set(listed) and not catalog.can_resume(listed["lrn-none-2"])
    assert not set(shipped["runs"]) & {r["run_id"] for r in catalog.all_runs(tmp_path / "empty-runs")}
    recomputed = claims.claims_json(tmp_path / "empty-runs")
    assert json.loads((out / claims.VERDICTS_FILE).read_text()) == recomputed
    lrn = next(r for r in recomputed if r["name"] == "lrn")
    assert lrn["source"] == "bundled" and lrn["verdict"] == "agrees"
    page = docs.read_text()
    assert page.startswith("# Claims\n\nintro\n\n") and page.endswith("\n\nafter\n") and "old verdicts" not in page
    assert lrn["ours"] in page
    with pytest.raises(claims.ClaimError, match="no finished run"):
        claims.bundle(tmp_path / "empty-runs", tmp_path / "nothing")
