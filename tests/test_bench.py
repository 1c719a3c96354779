"""The benchmark harness (bench/): its output schema, and that the hand-written eager SegNet
computes what the engine computes, so that timing one against the other is fair."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import segnet_caffe as caffe  # noqa: E402
from segnet_caffe import hardware  # noqa: E402
from segnet_caffe.errors import CaffeError  # noqa: E402

from bench import eager, nets, run, variants  # noqa: E402
from layer_testing import forward_adopting_ties  # noqa: E402

# Small sizes every pooling of each net halves exactly.
SIZES = {"segnet_squares": (32, 48), "segnet_basic": (32, 48), "segnet": (32, 64)}
SCORES = {"segnet_squares": "conv_classifier", "segnet_basic": "conv_classifier",
          "segnet": "conv1_1_D"}


def _randomise_bn(net, generator):
    """BN scale/shift away from their constant fillers, so a mis-wired BN would show."""
    for name, blobs in net.params.items():
        if name.endswith("_bn"):
            blobs[0].data[...] = (torch.rand(blobs[0].shape, generator=generator) + 0.5).numpy()
            blobs[1].data[...] = torch.randn(blobs[1].shape, generator=generator).numpy()


def _engine_net(net_name, kind):
    """The engine's `kind` net at a small size with random BN, fed a batch of 2 (not yet run)."""
    size = SIZES[net_name]
    images, labels = nets.inputs(net_name, 2, size)
    caffe.set_random_seed(0)
    net = caffe.Net(nets.net_param(net_name, kind, 2, size),
                    caffe.TRAIN if kind == "train" else caffe.TEST)
    _randomise_bn(net, torch.Generator().manual_seed(1))
    net.blobs["data"].data[...] = images.numpy()
    if kind == "train":
        net.blobs["label"].data[...] = labels.numpy()
    return net, images, labels


def _eager_scores(model, net, images):
    """The eager module's class scores, after running the engine `net` forward with the
    module's choices at pooling near-ties (layer_testing.forward_adopting_ties): fused and
    unfused BN round differently, and a tie broken the other way moves a value a pixel."""
    encoded, pooled = model.encode(images)
    mask_tops = [tops[1] for name, tops in net.top_names.items()
                 if net.layer_dict[name].type == "Pooling" and len(tops) == 2]
    masks = {top: indices.float().numpy() for top, (indices, _) in zip(mask_tops, pooled)}
    forward_adopting_ties(net, masks, rtol=1e-4, atol=1e-4)
    return model.decode(encoded, pooled)


@pytest.mark.parametrize("net_name", sorted(SIZES))
def test_eager_inference_matches_engine(net_name):
    net, images, _ = _engine_net(net_name, "inference")
    for fuse in (False, True):
        model = eager.build(net_name)
        eager.load_engine_weights(model, net)
        model.eval()
        if fuse:
            model = eager.fuse_bn(model)
        with torch.no_grad():
            prob = torch.softmax(_eager_scores(model, net, images), dim=1).numpy()
        engine_prob = net.blobs["prob"].data
        assert prob.shape == engine_prob.shape
        np.testing.assert_allclose(prob, engine_prob, rtol=0, atol=1e-4)


@pytest.mark.parametrize("net_name", sorted(SIZES))
def test_eager_training_forward_and_loss_match_engine(net_name):
    net, images, labels = _engine_net(net_name, "train")
    model = eager.build(net_name)
    eager.load_engine_weights(model, net)
    model.train()
    scores = _eager_scores(model, net, images)
    engine_scores = net.blobs[SCORES[net_name]].data
    np.testing.assert_allclose(scores.detach().numpy(), engine_scores, rtol=1e-4,
                               atol=1e-4 * np.abs(engine_scores).max())
    loss = model.loss(scores, labels, eager.class_weights(net_name))
    assert float(loss.detach()) == pytest.approx(float(net.blobs["loss"].data), rel=1e-5)


def test_net_param_refuses_a_size_the_poolings_do_not_halve():
    with pytest.raises(CaffeError, match=r"segnet: benchmark size 40x64 must be divisible by 32"):
        nets.net_param("segnet", "inference", 1, (40, 64))


def test_variant_names_are_unique_and_kinds_known(monkeypatch):
    assert "engine" in variants.by_name()
    monkeypatch.setattr(variants, "VARIANTS", variants.VARIANTS + [variants.VARIANTS[0]])
    with pytest.raises(ValueError, match='two variants are named "engine"'):
        variants.by_name()
    monkeypatch.setattr(variants, "VARIANTS", [variants.Variant("x", "y", kinds=("speed",))])
    with pytest.raises(ValueError, match="unknown kinds"):
        variants.by_name()


def test_each_measuring_process_gets_only_its_variants_environment(monkeypatch):
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")  # set where the harness was started
    for family, variant in (("engine", "nchw"), ("eager", "eager_channels_last")):
        env = run._child_environment(2, run.variant_environment(family, variant))
        assert "THP_MEM_ALLOC_ENABLE" not in env and env["OMP_NUM_THREADS"] == "2"
    for family, variant in (("engine", "thp"), ("eager", "eager_channels_last_thp")):
        env = run._child_environment(None, run.variant_environment(family, variant))
        assert env["THP_MEM_ALLOC_ENABLE"] == "1"


def test_ratios_compare_each_engine_variant_with_the_fastest_eager_one():
    def entry(family, inference_ms, train_ms):
        return {"family": family,
                "inference": {"batch1": {"ms": inference_ms}, "best": {"images_per_s": 1.0}},
                "train": {"batch1": {"ms": train_ms, "peak_memory_mib": 2132.0},
                          "prototxt_batch": {"ms": 4 * train_ms}}}
    per_net = {"segnet_basic": {"engine": entry("engine", 600.0, 2000.0),
                                "eager": entry("eager", 900.0, 2500.0),
                                "eager_channels_last": entry("eager", 500.0, 1600.0)}}
    result = run.ratios(per_net, anchors_apply=True)["segnet_basic"]
    assert result["best_eager"]["default"]["inference_batch1"] == 500.0
    engine = result["engine"]["engine"]
    assert engine["inference_batch1_vs_best_eager"] == pytest.approx(600 / 500)
    assert engine["train_batch1_vs_best_eager"] == pytest.approx(2000 / 1600)
    assert engine["train_prototxt_batch_vs_best_eager"] == pytest.approx(2000 / 1600)
    assert engine["inference_speedup_vs_caffe"] == pytest.approx(1785 / 600)
    assert engine["train_speedup_vs_caffe"] == pytest.approx(4916 / 2000)
    assert engine["train_peak_memory_vs_caffe"] == pytest.approx(0.5)
    assert "eager" not in result["engine"]


def test_ratios_compare_variants_measured_in_the_same_environment():
    """An allocator switch speeds both families: a transparent-huge-pages engine row is read
    against the eager rows measured with it, the others against those measured without."""
    def entry(family, train_ms):
        return {"family": family, "train": {"batch1": {"ms": train_ms, "peak_memory_mib": 1.0},
                                            "prototxt_batch": {"ms": train_ms}}}
    per_net = {"segnet": {"engine": entry("engine", 1000.0),
                          "thp": entry("engine", 900.0),
                          "eager_channels_last": entry("eager", 1000.0),
                          "eager_channels_last_thp": entry("eager", 800.0)}}
    result = run.ratios(per_net, anchors_apply=False)["segnet"]
    assert set(result["best_eager"]) == {"default", "THP_MEM_ALLOC_ENABLE=1"}
    assert result["engine"]["engine"]["train_batch1_vs_best_eager"] == 1.0
    assert result["engine"]["thp"]["train_batch1_vs_best_eager"] == 900 / 800


def _run_quick(tmp_path, *extra):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                           "--out", str(tmp_path), *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "cpu_quick.json").read_text())
    table = (tmp_path / "cpu_quick.md").read_text()
    return results, table


def _check_schema(results, table, net_names, variant_names):
    assert results["schema"] == run.SCHEMA_VERSION
    assert results["device"] == "cpu" and results["quick"] is True
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()
    assert results["source"].split("+")[0] == (commit or "unknown (not a git checkout)")
    assert results["errors"] == []
    assert results["cases_done"] == results["cases_planned"]
    machine = results["machine"]
    assert machine["torch_threads"] == 1
    peak = machine["matmul_peak_gflops"]
    assert set(peak) == {"float32", "bfloat16"} and peak["float32"] > 0
    # bfloat16 is measured only where it is native (elsewhere its fallback takes hours)
    assert peak["bfloat16"] > 0 if hardware.native_bfloat16() else peak["bfloat16"] is None
    assert machine["cpu"] == hardware.describe()
    assert len(results["load_average_start"]) == 3 and len(results["load_average_end"]) == 3
    assert set(results["nets"]) == set(net_names)
    for net_name in net_names:
        flops = results["flops_per_image"][net_name]
        assert 0 < flops["forward"] < flops["train"]
        entries = results["nets"][net_name]
        assert set(entries) == set(variant_names)
        for variant, entry in entries.items():
            assert entry["threads"] == 1
            inference = entry["inference"]
            assert inference["batch1"]["batch"] == 1 and inference["batch1"]["ms"] > 0
            assert inference["batch1"]["peak_memory_mib"] > 0
            assert inference["best"]["batch"] in [f["batch"] for f in inference["sweep"]]
            family = variants.by_name() if entry["family"] == "engine" else eager.VARIANTS
            if "train" in family[variant].kinds:
                train = entry["train"]
                assert train["batch1"]["ms"] > 0 and train["prototxt_batch"]["ms"] > 0
                assert train["prototxt_batch"]["batch"] == nets.prototxt_batch(net_name)
                assert [f["batch"] for f in train["sweep"]] == [1, nets.prototxt_batch(net_name), 8]
                assert train["best"]["batch"] in (1, nets.prototxt_batch(net_name), 8)
                assert np.isfinite(train["batch1"]["final_loss"])
            assert f"| {variant} |" in table
        engine_ratios = results["ratios"][net_name]["engine"]["engine"]
        assert {"inference_batch1_vs_best_eager", "train_batch1_vs_best_eager",
                "train_prototxt_batch_vs_best_eager"} <= set(engine_ratios)
    data = results["data"]["engine"]
    assert data["decode"]["squares"]["images_per_s"] > 0
    assert 0 <= data["train_with_data"]["data_wait_ms"] < data["train_with_data"]["ms"]
    assert "DenseImageData images/s" in table


def test_quick_run_writes_the_schema_for_one_net(tmp_path):
    """The harness end to end on the smallest net, the plain engine against the plain eager
    module (the full --quick run is the slow test below)."""
    results, table = _run_quick(tmp_path, "--nets", "segnet_squares", "--variants", "eager")
    _check_schema(results, table, ["segnet_squares"], ["engine", "eager"])


@pytest.mark.slow
def test_quick_run_writes_the_schema(tmp_path):
    """`python bench/run.py --quick`: every net, every engine and eager variant."""
    results, table = _run_quick(tmp_path)
    computing = [name for name, variant in {**variants.by_name(), **eager.VARIANTS}.items()
                 if {"inference", "train"} & set(variant.kinds)  # not the data-only ones
                 and (hardware.native_bfloat16() or not getattr(variant, "bfloat16", False))]
    _check_schema(results, table, sorted(nets.NATIVE_SIZES), computing)


def test_kinds_select_the_cases_and_the_data_options_are_data_variants():
    def cases(*argv):
        return run.plan_cases(run.parse_args(["--quick", "--nets", "segnet_basic", *argv]),
                              run.SETTINGS["quick"])

    assert cases("--variants", "data_cache", "data_workers", "--kinds", "data") == [
        ("engine", "engine", ["data"], []), ("engine", "data_workers", ["data"], []),
        ("engine", "data_cache", ["data"], [])]
    assert cases("--variants", "engine", "--kinds", "train") == [
        ("engine", "engine", ["train"], ["segnet_basic"])]
    assert cases("--variants", "engine") == [
        ("engine", "engine", ["data"], []),
        ("engine", "engine", ["inference", "train"], ["segnet_basic"])]


def test_a_failing_case_is_reported_not_fatal(tmp_path):
    """A variant that cannot run becomes an error entry naming it; the run goes on."""
    settings = dict(run.SETTINGS["quick"], train_batches={"segnet_squares": 4}, threads=1,
                    reference_dir=str(tmp_path), datasets={})
    result = run.run_case("engine", "no_such_variant", ["inference"], ["segnet_squares"], "cpu",
                          settings, tmp_path, timeout=120)
    assert result["error"] == 'exit 1: no engine variant "no_such_variant" in bench/variants.py'
    per_net, _, errors = run.assemble([(("engine", "no_such_variant", ["inference"],
                                         ["segnet_squares"]), result)], ["segnet_squares"])
    assert per_net == {"segnet_squares": {}}
    assert errors[0]["variant"] == "no_such_variant"


def test_rescore_recomputes_the_ratios_of_a_results_file(tmp_path):
    """`--rescore` rewrites an earlier run's ratios and table without measuring."""
    results = json.loads((REPO / "bench" / "results" / "cpu.json").read_text())
    results["ratios"] = {}
    (tmp_path / "old.json").write_text(json.dumps(results))
    assert run.main(["--rescore", str(tmp_path / "old.json"), "--out", str(tmp_path / "new")]) == 0
    rescored = json.loads((tmp_path / "new" / "cpu.json").read_text())
    assert rescored["ratios"] == run.ratios(results["nets"], anchors_apply=True)
    assert rescored["ratios"]["segnet_basic"]["engine"]["engine"]["train_batch1_vs_best_eager"] > 0
    assert rescored["schema"] == run.SCHEMA_VERSION and rescored["nets"] == results["nets"]
    table = (tmp_path / "new" / "cpu.md").read_text()
    assert "ratios recomputed by `python bench/run.py --rescore" in table


def test_step_profile_times_both_families_and_lists_ops(capsys):
    from bench import step_profile
    assert step_profile.main(["--net", "segnet_squares", "--kind", "inference", "--steps", "1",
                              "--top", "3", "--eager", "eager_channels_last"]) == 0
    out = capsys.readouterr().out
    assert f"CPU: {hardware.describe()}" in out
    assert "engine:engine" in out and "eager:eager_channels_last" in out
    assert "ratio engine / eager:" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| op |") and table[-1].startswith("| all ops |")
    assert len(table) == 1 + 3 + 1
