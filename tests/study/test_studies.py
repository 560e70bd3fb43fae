"""alexnet.study (studies, runner, stats, metrics) and `alexnet study`: the interval and verdict logic on known
numbers, the runner end to end on a small Fashion-MNIST subset (a planted difference is found, identical arms are
inconclusive), and the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from alexnet.study import stats as study_stats
from alexnet.cli.main import main
from alexnet.ops.lrn import LocalResponseNorm
from alexnet.study.studies import FIG1_BASE, STUDIES, Arm, Study, _remove_layer
from alexnet.study.runner import arm_settings, layer_lists, run_study, study_options
from alexnet.study.metrics import crossing, lrn_divisor


def test_t_quantiles_are_the_tabulated_ones():
    assert study_stats.t_quantile_975(1) == pytest.approx(12.7062)
    assert study_stats.t_quantile_975(2) == pytest.approx(4.3027)
    assert study_stats.t_quantile_975(30) == pytest.approx(2.0423)
    assert study_stats.t_quantile_975(200) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        study_stats.t_quantile_975(0)


def test_paired_interval_is_mean_plus_minus_t_sd_over_root_n():
    effect = study_stats.paired_effect([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])     # differences 2, 3, 4
    half = 4.3027 * 1.0 / math.sqrt(3)
    assert effect["mean"] == pytest.approx(3.0) and effect["n"] == 3
    assert (effect["low"], effect["high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    skipped = study_stats.paired_effect([1.0, None, 2.0], [0.0, 5.0, float("nan")])   # only seed 0 pairs
    assert skipped["n"] == 1 and skipped["low"] is None


@pytest.mark.parametrize("diffs, expected, verdict", [
    ([-5.0, -5.1, -4.9], -1, "agrees"),            # planted: the arm lowers the error, as the paper says
    ([-5.0, -5.1, -4.9], 1, "disagrees"),          # the same numbers against a claim of the other sign
    ([4.0, 4.2, 3.9, 4.1], -1, "disagrees"),
    ([0.3, -0.2, 0.1, -0.4], -1, "inconclusive"),  # noise around zero
    ([-5.0], -1, "inconclusive"),                  # one seed: no interval
    ([0.0, 0.0, 0.0], -1, "inconclusive"),         # identical arms: a zero-width interval at 0
    ([-5.0, -5.1, -4.9], None, "inconclusive"),    # no claim
])
def test_verdict_follows_the_interval(diffs, expected, verdict):
    effect = study_stats.paired_effect(diffs, [0.0] * len(diffs))
    assert study_stats.verdict(effect, expected) == verdict


def test_lrn_divisor_matches_input_over_output():
    norm = LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0)
    x = torch.rand(2, 8, 4, 4) * 10 + 0.5
    assert lrn_divisor(torch.nn.Sequential(norm), x) == pytest.approx((x / norm(x)).mean().item(), rel=1e-4)
    assert lrn_divisor(torch.nn.Sequential(torch.nn.ReLU()), x) is None


def test_crossing_reads_the_first_block_at_or_below_25_percent():
    curve = {"epoch": [0.1, 0.2, 0.3], "seconds": [1.0, 2.0, 3.0], "error": [60.0, 25.0, 10.0]}
    assert crossing(curve) == {"epochs_to_25": 0.2, "seconds_to_25": 2.0, "final_train_error": 10.0}
    assert crossing(dict(curve, error=[90.0, 80.0, 70.0]))["epochs_to_25"] is None


def test_full_budget_on_other_data_uses_all_of_it_at_the_papers_crop():
    options = study_options(seeds=None, budget="full", epochs=None, data="photos/", model="alexnet_2012", out="x")
    settings = arm_settings(STUDIES["lrn"], STUDIES["lrn"].arm("none"), options)
    assert settings["train_subset"] == 0 and (settings["image_size"], settings["crop_size"]) == (256, 224)
    assert settings["model"] == "alexnet_2012" and options["seeds"] == 3
    quick = study_options(seeds=None, budget="quick", epochs=None, data=None, model=None, out="x")
    assert arm_settings(STUDIES["lrn"], STUDIES["lrn"].arm("none"), quick)["train_subset"] == 1024


def test_depth_and_tower_arms_rewrite_the_layer_lists():
    options = study_options(seeds=1, budget="quick", epochs=None, data=None, model=None, out="unused")
    base = arm_settings(STUDIES["depth"], STUDIES["depth"].arm("full"), options)
    layers = layer_lists(base["model"], base["model_kwargs"])
    assert layers["widths"] == [32, 64, 96, 96, 64] and layers["pool_layers"] == [1, 2, 5]
    kw = _remove_layer(3)(layers)["model_kwargs"]
    assert kw["widths"] == [32, 64, 96, 64] and kw["pool_layers"] == [1, 2, 4] and kw["norm_layers"] == [1, 2]
    kw = _remove_layer(2)(layers)["model_kwargs"]          # conv2's LRN and pool now follow old conv3
    assert kw["widths"] == [32, 96, 96, 64] and kw["pool_layers"] == [1, 2, 4] and kw["norm_layers"] == [1, 2]
    one = arm_settings(STUDIES["towers"], STUDIES["towers"].arm("one-tower"), options)["model_kwargs"]
    two = arm_settings(STUDIES["towers"], STUDIES["towers"].arm("two-towers"), options)["model_kwargs"]
    assert one["widths"] == [16, 32, 48, 48, 64] and one["groups"] == [1] * 5 and one["lrn"]["groups"] == 1
    assert two["groups"] == [1, 2, 1, 2, 2] and two["lrn"]["groups"] == 2 and "widths" not in two
    assert one["norm"] == two["norm"] == "lrn"      # the base's choices stay under the arm's change


# Test-only studies on a fast-learning base (Fig. 1's small net at 24 px crops, lr 0.03): one arm planted to
# be much worse (an lr too small to learn anything), and two identical arms.
FAST_BASE = dict(FIG1_BASE, crop_size=24, lr=0.03)
PLANTED = Study("planted", "test", "a net that cannot learn is worse", {"top1": -50.0},
                (Arm("frozen", {"lr": 1e-9}), Arm("learning", {}, expected=-1)), about="learning")
IDENTICAL = Study("identical", "test", "the same settings twice", {},
                  (Arm("learning", {}), Arm("learning-again", {}, expected=-1)), about="learning-again")


def test_a_planted_difference_is_found_and_identical_arms_are_inconclusive(fashion, tmp_path, monkeypatch):
    monkeypatch.setattr("alexnet.study.runner.BASE", FAST_BASE)
    options = study_options(seeds=3, budget="quick", epochs=None, data=None, model=None, out=str(tmp_path))
    options["budget"]["train"]["batch_size"] = 32          # 32 steps: enough to learn something
    options["out"] = str(tmp_path / "planted")
    planted = run_study(PLANTED, options, log=lambda *a: None)
    effect = planted["effect"]
    assert effect["high"] < 0 and planted["verdict"] == "agrees", effect    # the interval excludes 0
    assert planted["arms"][0]["mean"]["test_top1_error"] > 70           # lr 1e-9: no better than chance
    options["out"] = str(tmp_path / "identical")
    identical = run_study(IDENTICAL, options, log=lambda *a: None)
    assert identical["effect"]["mean"] == 0 and identical["verdict"] == "inconclusive"
    assert len(list((tmp_path / "runs").iterdir())) == 6      # 2 arms x 3 seeds; the identical study reused them

    saved = json.loads((tmp_path / "planted" / "results.json").read_text())
    assert {"study", "claim", "data", "arms", "effect", "verdict"} <= set(saved)
    assert set(saved["claim"]) >= {"text", "section", "paper"} and saved["data"] == "fashion-mnist"
    for arm in saved["arms"]:
        assert {"name", "settings", "runs", "mean", "std"} <= set(arm)
        assert [r["seed"] for r in arm["runs"]] == [0, 1, 2]
        for run in arm["runs"]:
            assert {"test_top1_error", "test_top5_error", "final_train_top1", "train_loss_curve", "seconds"} <= set(run)
            assert len(run["train_loss_curve"]) == 8 and 0 <= run["test_top5_error"] <= run["test_top1_error"] <= 100
    record = json.loads((tmp_path / "runs" / saved["arms"][1]["runs"][0]["run"] / "study_run.json").read_text())
    assert record["curve"]["step"] == [4, 8, 12, 16, 20, 24, 28, 32] and record["curve"]["epoch"][-1] == 1.0
    assert saved["arms"][0]["settings"]["lr"] == 1e-9 and saved["arms"][1]["settings"]["lr"] == 0.03
    assert {"low", "high", "mean"} <= set(saved["effect"])
    table = (tmp_path / "planted" / "table.md").read_text()
    assert "learning vs frozen" in table and "**agrees**" in table
    assert (tmp_path / "planted" / "planted.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_relu_vs_tanh_sweeps_lrs_and_draws_fig1(fashion, tmp_path):
    options = study_options(seeds=2, budget="quick", epochs=None, data=None, model=None, out=str(tmp_path))
    results = run_study("relu-vs-tanh", options, log=lambda *a: None)
    for arm in results["arms"]:
        assert [s["lr"] for s in arm["lr_sweep"]] == [0.01, 0.05]
        assert arm["settings"]["lr"] in (0.01, 0.05) and len(arm["curves"]) == 2
        assert arm["settings"]["model_kwargs"]["activation"] == arm["name"]
    for run in results["arms"][1]["runs"]:              # a quick run may not get to 25% training error
        assert run["epochs_to_25"] is None or 0 < run["epochs_to_25"] <= 1
    assert results["arms"][1]["curves"][0]["epoch"][-1] == pytest.approx(1.0)
    assert results["effect"]["metric"] == "epochs_to_25"
    assert len(list((tmp_path / "runs").iterdir())) == 6      # 2 lrs x 2 arms on seed 0, + seed 1 per arm
    assert (tmp_path / "relu-vs-tanh.png").exists()


def test_every_study_is_run_by_all_and_points_at_one_of_its_arms():
    from alexnet.study.studies import ALL_ORDER
    assert sorted(ALL_ORDER) == sorted(STUDIES)
    for study in STUDIES.values():
        assert study.about in [a.name for a in study.arms[1:]] and study.arm(study.about).expected in (-1, 1)


def test_study_list_and_bad_usage(capsys, tmp_path):
    assert main(["study", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in STUDIES) and "[3.3]" in listed and "-1.4" in listed
    assert main(["study", "no-such-study"]) == 2
    assert "relu-vs-tanh" in capsys.readouterr().err
    assert main(["study"]) == 2
    assert main(["study", "lrn", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["study", "lrn", "--model", "resnet18", "--out", str(tmp_path / "x")]) == 2
    assert "AlexNet-family" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["study", "lrn", "--out", str(tmp_path / "file")]) == 2


def test_a_damaged_study_run_json_is_treated_as_missing_and_the_run_trained_again(tmp_path, monkeypatch):
    """Issue 23, item 26: a study_run.json damaged from outside ended in a JSONDecodeError traceback."""
    import alexnet.study.runner as runner
    from alexnet.train.recipes import resolve_config
    cfg = resolve_config("quick", out=str(tmp_path / "run"), train_subset=64, batch_size=32)
    trained = []

    def fake_train(config, **kwargs):
        trained.append(config.out)
        (tmp_path / "run" / "last.pt").write_bytes(b"weights")
        return {"history": [{"epoch": 1, "train_top1": 0.5}]}
    monkeypatch.setattr(runner, "train", fake_train)
    (tmp_path / "run").mkdir()
    logged = []
    for damage in ('{"config": {', "[1, 2]", '{"config": {}}', "\xff\xfe", None):
        done = tmp_path / "run" / "study_run.json"
        if damage is None:        # a whole record, but its last.pt is gone
            (tmp_path / "run" / "last.pt").unlink()
        else:
            done.write_bytes(damage.encode("latin1"))
        record = runner.ensure_run(cfg, 1, logged.append)
        assert record["history"] == [{"epoch": 1, "train_top1": 0.5}] and not record["diverged"]
        assert json.loads(done.read_text())["config"]["out"] == cfg.out
        assert any("study_run.json is damaged" in line for line in logged), logged
        logged.clear()
    assert len(trained) == 5
    assert runner.ensure_run(cfg, 1, logged.append) == record and len(trained) == 5    # a whole one is reused
    assert logged == []


def test_a_damaged_metrics_cache_is_measured_again(tmp_path):
    from alexnet.study.metrics import read_cache
    path = tmp_path / "study_metrics.json"
    assert read_cache(path) == {}
    for damage in ("{", "[]", "\xff"):
        path.write_bytes(damage.encode("latin1"))
        assert read_cache(path) == {}
    path.write_text('{"params": 3}')
    assert read_cache(path) == {"params": 3}
