"""Sweep files: parsing, the demo, planning, and every validation error (no Ray)."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from mgkd.config.sweep import (Pair, Resources, SchedulerSpec, SearcherSpec, Study, SweepSpec,
                               load_sweep, plan)
from mgkd.errors import ConfigError
from search.sweep import default_sweep, validate_sweep

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "sweeps" / "demo.yaml"
PAPER = ROOT / "sweeps" / "paper-cifar100.yaml"
PAPER_MARKET = ROOT / "sweeps" / "paper-market1501.yaml"
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def demo_dict() -> dict[str, Any]:
    return default_sweep().to_dict()


def check(data: dict[str, Any], **kwargs: Any) -> list[Study]:
    """Parse and validate a sweep mapping (no data check unless asked)."""
    kwargs.setdefault("check_data", False)
    return validate_sweep(SweepSpec.from_dict(data), **kwargs)


def expect_error(data: dict[str, Any], *words: str, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        check(data, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert "\n" not in message.strip(), f"not one paragraph: {message}"
    return message


# ---- files, round trip, demo -----------------------------------------------------------------
def test_the_built_in_demo_is_the_demo_file(monkeypatch, tmp_path):
    assert default_sweep() == load_sweep(DEMO)
    import search.sweep
    monkeypatch.setattr(search.sweep, "DEMO_SWEEP_FILE", tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match="give a sweep file"):
        default_sweep()


@pytest.mark.parametrize("make", [default_sweep, lambda: load_sweep(PAPER),
                                  lambda: load_sweep(PAPER_MARKET)],
                         ids=["demo", "paper", "paper-market1501"])
def test_round_trip(make: Callable[[], SweepSpec]):
    spec = make()
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    assert SweepSpec.from_dict(yaml.safe_load(spec.to_yaml())) == spec
    assert SweepSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec


def test_round_trip_keeps_checkpoint_and_address():
    data = demo_dict()
    data["pairs"][0]["teacher_checkpoint"] = "teachers/r20.pt"
    data.update(ray_address="auto", max_concurrent_trials=None, checkpoint_every=3)
    spec = SweepSpec.from_dict(data)
    assert spec.pairs[0] == Pair("resnet20", "resnet8", "teachers/r20.pt")
    assert SweepSpec.from_dict(spec.to_dict()) == spec


def test_parsed_types_and_defaults():
    spec = SweepSpec.from_dict({"name": "x", "pairs": [{"teacher": "resnet20", "student": "resnet8"}]})
    assert spec.methods == ["kd"] and spec.modes == ["mas"] and spec.space == "full"
    assert spec.resources_per_trial == Resources() and spec.scheduler == SchedulerSpec()
    assert spec.searcher == SearcherSpec() and spec.base == {} and spec.ray_address is None
    demo = default_sweep()
    assert demo.resources_per_trial == Resources(cpu=1.0, gpu=0.0)
    assert isinstance(demo.scheduler.reduction_factor, float)


def test_demo_sweep_shape():
    demo = default_sweep()
    assert demo.base["dataset"] == "digits"
    assert [p.label for p in demo.pairs] == ["resnet20__resnet8", "wrn_16_2__wrn_16_1"]
    assert demo.methods == ["kd"] and demo.modes == ["mas"]
    assert demo.max_concurrent_trials == 2 and demo.checkpoint_every == 2
    assert demo.scheduler == SchedulerSpec(grace_period=3, reduction_factor=2.0)
    assert demo.run_dir.is_absolute() and demo.run_dir.name == "demo"


def test_default_sweep_validates_with_data_check():
    studies = validate_sweep(default_sweep(), cluster_resources={"CPU": 2.0}, check_data=True)
    assert [s.key for s in studies] == ["resnet20__resnet8__kd__mas", "wrn_16_2__wrn_16_1__kd__mas"]


def test_run_dir():
    spec = dataclasses.replace(default_sweep(), storage_path="~/sweeps", name="n1")
    assert spec.run_dir == Path.home() / "sweeps" / "n1"


def test_no_ray_at_import():
    code = "import sys, search.sweep; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- planning --------------------------------------------------------------------------------
def test_paper_plan_order_count_and_keys():
    spec = load_sweep(PAPER)
    studies = plan(spec)
    assert len(studies) == 7 * 8 * 3 == 168
    expected = list(itertools.product(spec.pairs, spec.methods, spec.modes))
    assert [(s.pair, s.method, s.mode) for s in studies] == expected
    assert studies[0].key == "wrn_40_2__wrn_16_2__kd__plain"
    assert studies[1].key == "wrn_40_2__wrn_16_2__kd__mag"
    assert studies[3].key == "wrn_40_2__wrn_16_2__fitnet__plain"
    assert studies[-1].key == "vgg13__vgg8__afd__mas"
    keys = [s.key for s in studies]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert SAFE_FILE_NAME.fullmatch(key), key


def test_study_base_config():
    spec = load_sweep(PAPER)
    study = plan(spec)[5 * 3 * 8 + 3]  # resnet32x4 -> resnet8x4, fitnet, plain
    assert study.key == "resnet32x4__resnet8x4__fitnet__plain"
    base = study.base
    assert (base.teacher, base.student, base.method, base.mode) == ("resnet32x4", "resnet8x4",
                                                                    "fitnet", "plain")
    assert base.dataset == "cifar100" and base.epochs == 240 and base.teacher_epochs == 240
    assert Path(base.data_dir).is_absolute() and Path(base.data_dir).name == "data"
    assert Path(base.cache_dir) == spec.run_dir / "cache"
    assert base.teacher_checkpoint is None


def test_study_keeps_explicit_cache_dir(tmp_path: Path):
    data = demo_dict()
    data["base"]["cache_dir"] = str(tmp_path / "c")
    assert plan(SweepSpec.from_dict(data))[0].base.cache_dir == str(tmp_path / "c")


def test_keys_file_name_safe_for_every_architecture():
    from mgkd.models import MODEL_NAMES
    from mgkd.methods import METHOD_NAMES

    for arch, method in zip(MODEL_NAMES, itertools.cycle(METHOD_NAMES)):
        study = Study(Pair(arch, arch), method, "mag", base=None)  # type: ignore[arg-type]
        assert SAFE_FILE_NAME.fullmatch(study.key), study.key
        assert study.key.count("__") == 3


# ---- validation ------------------------------------------------------------------------------
def test_paper_file_validates_without_data():
    studies = validate_sweep(load_sweep(PAPER), check_data=False,
                             cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert len(studies) == 168


def test_market1501_paper_file_plans_the_seeds_two_settings_selected_on_map(tmp_path, monkeypatch):
    studies = validate_sweep(load_sweep(PAPER_MARKET), check_data=False,
                             cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert [s.key for s in studies] == [f"osnet_x1_0__{student}__rkd__{mode}"
                                        for student in ("resnet50_reid", "osnet_x0_75")
                                        for mode in ("plain", "mag", "mas")]
    assert {(s.base.dataset, s.base.objective, s.base.batch_size) for s in studies} == {
        ("market1501", "val_map", 64)}
    # the commented twins name published teacher weights and a student's initial weights
    lines = PAPER_MARKET.read_text().splitlines()
    twins = [line.replace("  # - ", "  - ", 1) for line in lines if line.startswith("  # - {teacher:")]
    data = yaml.safe_load(PAPER_MARKET.read_text())
    data["pairs"] = [yaml.safe_load(line.strip()[2:]) for line in twins]
    monkeypatch.chdir(tmp_path)
    for pair in data["pairs"]:
        for key in ("teacher_checkpoint", "student_init"):
            (tmp_path / pair[key]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / pair[key]).touch()
    studies = check(data, cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert {Path(s.base.student_init).name for s in studies} == {
        "resnet50-imagenet.pth", "osnet_x0_75_imagenet.pth"}


@pytest.mark.parametrize("name", ["dukemtmcreid", "msmt17"])
def test_reid_examples_beside_market_plan_studies_with_their_evaluation_options(name):
    studies = validate_sweep(load_sweep(ROOT / "sweeps" / f"{name}.yaml"), check_data=False,
                             cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert [s.key for s in studies] == [f"osnet_x1_0__osnet_x0_75__rkd__{mode}"
                                        for mode in ("plain", "mag", "mas")]
    assert {(s.base.dataset, s.base.objective, s.base.eval_normalize, s.base.rerank)
            for s in studies} == {(name, "val_map", True, False)}


def test_paper_file_shows_the_published_teacher_pattern(tmp_path: Path, monkeypatch):
    # Swap every pair for its commented twin that points at a published teacher file.
    lines = PAPER.read_text().splitlines()
    twins = [i for i, line in enumerate(lines) if line.startswith("  # - {teacher:")]
    assert len(twins) == 7
    for i in twins:
        assert lines[i - 1].startswith("  - {teacher:")
        lines[i - 1], lines[i] = "", lines[i].replace("  # - ", "  - ", 1)
    data = yaml.safe_load("\n".join(lines))
    monkeypatch.chdir(tmp_path)  # teacher_checkpoint paths are relative to where mgkd tune runs
    for pair in data["pairs"]:
        path = tmp_path / pair["teacher_checkpoint"]
        assert path.parent.name == f"{pair['teacher']}_vanilla" and path.name == "ckpt_epoch_240.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    studies = check(data, cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert len(studies) == 168
    for study in studies:
        assert Path(study.base.teacher_checkpoint) == (
            tmp_path / "teachers" / f"{study.base.teacher}_vanilla" / "ckpt_epoch_240.pth")


def test_missing_cifar_is_reported(tmp_path: Path):
    data = load_sweep(PAPER).to_dict()
    data["base"]["data_dir"] = str(tmp_path / "nodata")
    expect_error(data, "sweep base.data_dir", "cifar100", str(tmp_path / "nodata"),
                 "mgkd download cifar100", check_data=True)
    check(data, check_data=False)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation of the demo mapping: ``_set("scheduler.grace_period", 5)``."""
    def apply(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return apply


def _drop(path: str) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
    return apply


ERRORS: list[tuple[str, Callable[[dict], None], tuple[str, ...]]] = [
    ("unknown top-level key", _set("epochs", 3),
     ("sweep: unknown key(s) ['epochs']", "allowed keys", "num_samples", "base")),
    ("missing name", _drop("name"), ("missing required key(s) ['name']",)),
    ("unsafe name", _set("name", "a/b"), ("sweep name", "letters, digits")),
    ("uri storage", _set("storage_path", "s3://bucket/runs"), ("sweep storage_path", "NFS")),
    ("pairs empty", _set("pairs", []), ("sweep pairs", "needs pairs", "or peer groups")),
    ("pair missing student", _set("pairs.0", {"teacher": "resnet20"}),
     ("sweep pairs[0]", "missing required key(s) ['student']")),
    ("pair unknown key", _set("pairs.0", {"teacher": "resnet20", "student": "resnet8", "ckpt": "x"}),
     ("sweep pairs[0]", "unknown key(s) ['ckpt']", "teacher_checkpoint")),
    ("unknown teacher", _set("pairs.1.teacher", "resnet999"),
     ("sweep pairs[1].teacher", "unknown architecture 'resnet999'", "allowed", "resnet32x4")),
    ("unknown student", _set("pairs.0.student", "tinynet"),
     ("sweep pairs[0].student", "wrn_16_1")),
    ("duplicate pair", _set("pairs", [{"teacher": "resnet20", "student": "resnet8"}] * 2),
     ("sweep pairs[1]", "repeats pairs[0]", "list it once")),
    ("unknown method", _set("methods", ["kd", "hint"]),
     ("sweep methods[1]", "unknown method 'hint'", "fitnet", "crd")),
    ("duplicate method", _set("methods", ["kd", "kd"]), ("sweep methods[1]", "list it once")),
    ("methods not a list", _set("methods", "kd"), ("sweep methods", "[kd, crd]")),
    ("unknown mode", _set("modes", ["stable"]), ("sweep modes[0]", "plain, mag, mas")),
    ("space wrong type", _set("space", 3), ("sweep space", "granularity, weights, full")),
    ("pair key in base", _set("base.teacher", "resnet56"),
     ("sweep base.teacher", "pairs", "Move them")),
    ("checkpoint in base", _set("base.teacher_checkpoint", "t.pt"),
     ("sweep base.teacher_checkpoint", "pairs")),
    ("method in base", _set("base.method", "crd"), ("sweep base.method", "methods")),
    ("mode in base", _set("base.mode", "mag"), ("sweep base.mode", "modes")),
    ("unknown base key", _set("base.epoch", 3),
     ("sweep base", "unknown key(s) ['epoch']", "allowed keys", "epochs")),
    ("bad base value", _set("base.epochs", 0), ("sweep base.epochs", "out of range", "allowed")),
    ("bad base type", _set("base.batch_size", "big"), ("sweep base.batch_size", "integer")),
    ("unknown dataset", _set("base.dataset", "imagenet"),
     ("sweep base.dataset", "imagenet", "cifar100", "digits")),
    ("data options", _set("base.data_options", {"num_train": 10}),
     ("sweep base.data_options", "synthetic")),
    ("method options", _set("base.method_options", {"hint_layer": 7}),
     ("sweep base.method_options", "hint_layer", "allowed")),
    ("method options of one method", lambda d: d.update(methods=["fitnet", "kd"],
                                                        base={**d["base"],
                                                              "method_options": {"hint_layer": 2}}),
     ("sweep base.method_options", "hint_layer", "'kd'", "(in study resnet20__resnet8__kd__mas")),
    ("mas without logit term", _set("base.logit_weight", 0),
     ("sweep base.logit_weight", "mas", "mode mag")),
    ("base not a mapping", _set("base", [1]), ("sweep base", "mapping")),
    ("num_samples 0", _set("num_samples", 0), ("sweep num_samples", "1 or more")),
    ("num_samples type", _set("num_samples", "ten"), ("sweep num_samples", "integer")),
    ("max_concurrent 0", _set("max_concurrent_trials", 0),
     ("sweep max_concurrent_trials", "1 or more")),
    ("grace 0", _set("scheduler.grace_period", 0), ("sweep scheduler.grace_period", "at least 1")),
    ("grace beyond epochs", lambda d: (d["scheduler"].update(grace_period=5),
                                       d["base"].update(epochs=3)),
     ("sweep scheduler.grace_period", "5 is beyond base.epochs 3", "grace period beyond epochs",
      "between 1 and 3")),
    ("grace beyond default epochs", lambda d: (d.update(base={"dataset": "digits", "device": "cpu"}),
                                               d["scheduler"].update(grace_period=300)),
     ("300 is beyond base.epochs 240",)),
    ("reduction factor 1", _set("scheduler.reduction_factor", 1),
     ("sweep scheduler.reduction_factor", "greater than 1")),
    ("scheduler unknown key", _set("scheduler.max_t", 10),
     ("sweep scheduler", "['max_t']", "grace_period, reduction_factor")),
    ("searcher seed", _set("searcher.seed", -1), ("sweep searcher.seed", "out of range")),
    ("searcher multivariate", _set("searcher.multivariate", "yes"),
     ("sweep searcher.multivariate", "true or false")),
    ("negative cpu", _set("resources_per_trial.cpu", -1),
     ("sweep resources_per_trial.cpu", "out of range", "0 or more")),
    ("negative gpu", _set("resources_per_trial.gpu", -0.5),
     ("sweep resources_per_trial.gpu", "out of range", "0 or more")),
    ("gpu 1.5", _set("resources_per_trial.gpu", 1.5),
     ("sweep resources_per_trial.gpu", "whole number")),
    ("zero resources", lambda d: d.update(resources_per_trial={"cpu": 0, "gpu": 0},
                                          max_concurrent_trials=None),
     ("sweep resources_per_trial", "max_concurrent_trials")),
    ("cuda without gpu", _set("base.device", "cuda"),
     ("sweep base.device", "resources_per_trial.gpu")),
    ("checkpoint every 0", _set("checkpoint_every", 0), ("sweep checkpoint_every", "1 or more")),
    ("ray address type", _set("ray_address", 6379), ("sweep ray_address", "auto")),
    ("missing checkpoint", _set("pairs.0.teacher_checkpoint", "/nonexistent/teacher.pt"),
     ("sweep pairs[0].teacher_checkpoint", "/nonexistent/teacher.pt", "does not exist",
      "mgkd teacher --arch resnet20")),
]


@pytest.mark.parametrize("mutate, words", [(m, w) for _, m, w in ERRORS], ids=[n for n, _, _ in ERRORS])
def test_errors_name_key_and_fix(mutate: Callable[[dict], None], words: tuple[str, ...]):
    data = demo_dict()
    mutate(data)
    expect_error(data, *words)


def test_errors_for_specs_built_in_code():
    spec = default_sweep()
    for bad, words in [
        (dataclasses.replace(spec, num_samples=0), ("sweep num_samples",)),
        (dataclasses.replace(spec, scheduler=SchedulerSpec(grace_period=spec.base["epochs"] + 1)),
         (f"{spec.base['epochs'] + 1} is beyond base.epochs {spec.base['epochs']}",)),
        (dataclasses.replace(spec, resources_per_trial=Resources(cpu=-1)),
         ("sweep resources_per_trial.cpu",)),
        (dataclasses.replace(spec, pairs=[Pair("resnet20", "nope")]), ("sweep pairs[0].student",)),
    ]:
        with pytest.raises(ConfigError) as info:
            validate_sweep(bad, check_data=False)
        assert all(w in str(info.value) for w in words), str(info.value)


def test_plan_rejects_unknown_names():
    spec = dataclasses.replace(default_sweep(), methods=["kd", "bogus"])
    with pytest.raises(ConfigError, match=r"sweep methods\[1\]"):
        plan(spec)


def test_existing_checkpoint_is_accepted_and_made_absolute(tmp_path: Path, monkeypatch):
    (tmp_path / "t.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    data = demo_dict()
    data["pairs"][0]["teacher_checkpoint"] = "t.pt"
    studies = check(data)
    assert studies[0].base.teacher_checkpoint == str(tmp_path / "t.pt")
    assert studies[1].base.teacher_checkpoint is None


# ---- cluster resources -----------------------------------------------------------------------
def _gpu_demo(gpu: float, cpu: float = 1.0) -> dict[str, Any]:
    data = demo_dict()
    data["resources_per_trial"] = {"cpu": cpu, "gpu": gpu}
    data["base"]["device"] = "auto"
    return data


def test_gpu_request_without_gpu_in_cluster():
    message = expect_error(_gpu_demo(0.5), "sweep resources_per_trial.gpu", "no GPU",
                           "resources_per_trial.gpu: 0", cluster_resources={"CPU": 2.0, "memory": 1e9})
    assert "CPU 2" in message
    expect_error(_gpu_demo(1), "no GPU", cluster_resources={"CPU": 2.0, "GPU": 0.0})


def test_gpu_request_checked_only_against_a_cluster():
    check(_gpu_demo(0.5))  # no cluster known yet: nothing to compare with
    check(_gpu_demo(0.5), cluster_resources={"CPU": 2.0, "GPU": 1.0})


def test_too_few_gpus_or_cpus():
    expect_error(_gpu_demo(2), "sweep resources_per_trial.gpu", "at most 1",
                 cluster_resources={"CPU": 8.0, "GPU": 1.0})
    expect_error(_gpu_demo(0, cpu=4), "sweep resources_per_trial.cpu", "at most 2",
                 cluster_resources={"CPU": 2.0})


# ---- search spaces ---------------------------------------------------------------------------
def test_space_errors():
    data = demo_dict()
    data["space"] = "fancy"
    expect_error(data, "sweep space", "unknown preset 'fancy'", "granularity, weights, full")
    data["space"] = {"preset": "full", "g*_dim": {"type": "categorical", "choices": [16, 32]}}
    expect_error(data, "sweep space", "resnet20__resnet8__kd__mas")  # no 64 / 256: no paper default
    data["space"] = {"preset": "full", "lr": {"type": "float", "low": 1.0, "high": 0.1}}
    expect_error(data, "sweep space", "lr")


def test_every_preset_validates():
    from spaces import PRESETS

    for preset in PRESETS:
        data = demo_dict()
        data["space"] = preset
        data["modes"] = ["plain", "mag", "mas"]
        assert len(check(data)) == 6


def test_demo_space_narrows_the_head_bank():
    from spaces import build_space

    spec = default_sweep()
    study = plan(spec)[0]
    levels = set(build_space(spec.space, study.base).head_levels())
    assert (64, 2.0) in levels and (256, 8.0) in levels
    assert {dim for dim, _ in levels} <= {16, 32, 64, 128, 256}
    assert {t for _, t in levels} <= {1.0, 2.0, 4.0, 8.0}


# ---- loading ---------------------------------------------------------------------------------
def test_load_sweep_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(bad)
    wrong = tmp_path / "wrong.yaml"
    data = copy.deepcopy(demo_dict())
    data["num_samples"] = -2
    wrong.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"wrong\.yaml: sweep num_samples"):
        load_sweep(wrong)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_sweep(listed)


def test_the_paper_dml_file_plans_the_papers_peer_group_with_its_settings_first():
    from spaces import build_space
    studies = validate_sweep(load_sweep(ROOT / "sweeps" / "paper-cifar100-dml.yaml"),
                             check_data=False,
                             cluster_resources={"CPU": 16.0, "GPU": 1.0, "memory": 1e11})
    assert [s.key for s in studies] == ["resnet20+resnet20__dml__plain",
                                        "resnet20+resnet20__dml__mag"]
    for study in studies:
        paper = build_space("full", study.base).paper_config()
        assert paper.peers == ["resnet20", "resnet20"] and paper.epochs == 240
        assert (paper.ce_weight, paper.logit_weight, paper.temperature, paper.lr) == \
            (0.5, 0.5, 4.0, 0.05)
        assert [(g.dim, g.temperature) for g in paper.granularities] == (
            [(64, 2.0), (256, 8.0)] if study.mode == "mag" else [])
