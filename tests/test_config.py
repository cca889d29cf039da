"""Real Hydra composition of conf/ (as installed), the schema, and the checks beyond types."""
import itertools

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf.errors import OmegaConfBaseException

from conftest import cli, composed_spec
from resnet_cifar.config import BaseConfig, Shortcut, validate
from resnet_cifar.errors import ConfigError
from resnet_cifar.checks import check_plugins
from resnet_cifar.schedule import LrSchedule

NORMALIZATIONS = ("per_pixel_mean", "channel_stats", "imagenet", "unit", "raw", "zca")


def load(*overrides: str) -> BaseConfig:
    """The typed config the command composes, checked as the command checks it (schema, then plug-ins)."""
    cfg = composed_spec(*overrides).config
    validate(cfg)
    check_plugins(cfg)
    return cfg


def test_defaults_are_the_papers_recipe():
    cfg = load()
    assert (cfg.arch["name"], cfg.depth, cfg.shortcut) == ("resnet", 20, Shortcut.A)
    assert cfg.arch["_target_"] == "resnet_cifar.models.resnet.cifar_resnet"
    assert cfg.normalization["name"] == "per_pixel_mean"
    o, s = cfg.optimizer, cfg.schedule
    assert (o["_target_"], o["lr"], o["momentum"], o["weight_decay"]) == ("torch.optim.SGD", 0.1, 0.9, 1e-4)
    assert (list(s.milestones), s.gamma) == ([32000, 48000], 0.1)
    assert (s.warmup.lr, s.warmup.until_train_error, s.warmup.min_depth) == (0.01, 80.0, 110)
    assert cfg.trainer.max_iters == 64000
    d = cfg.data
    assert (d.batch_size, d.val_size, d.download, d.pipeline) == (128, 0, True, "device")
    assert cfg.augment == {"_target_": "resnet_cifar.data.augment.CropFlip", "pad": 4, "once": False, "name": "random"}
    assert cfg.trainer.channels_last is True
    assert cfg.trainer.cuda_graph is None and cfg.trainer.compile is False  # graphs wherever they apply


def test_cuda_graph_by_default_only_where_it_applies():
    from resnet_cifar.step import uses_cuda_graph
    cfg = load()
    assert uses_cuda_graph(cfg, on_gpu=True, processes=1, captured_optimizer=True)
    assert not uses_cuda_graph(cfg, on_gpu=False, processes=1, captured_optimizer=True)
    assert not uses_cuda_graph(cfg, on_gpu=True, processes=2, captured_optimizer=True)
    assert not uses_cuda_graph(cfg, on_gpu=True, processes=1, captured_optimizer=False)  # not SGD: eager
    assert not uses_cuda_graph(load("trainer.compile=true", "trainer.compile_mode=reduce-overhead"), True, 1, True)
    assert not uses_cuda_graph(load("data.pipeline=torchvision"), True, 1, True)  # its batches come from a DataLoader
    assert not uses_cuda_graph(load("trainer.cuda_graph=false"), on_gpu=True, processes=1, captured_optimizer=True)


@pytest.mark.slow
def test_every_group_option_composes():
    for arch, normalization, data in itertools.product(
            ["resnet", "plain", "preact"], NORMALIZATIONS, ["cifar10", "cifar100"]):
        cfg = load(f"arch={arch}", f"normalization={normalization}", f"data={data}")
        assert (cfg.arch["name"], cfg.normalization["name"], cfg.data.name.value) == (arch, normalization, data)
    for shortcut in "ABC":
        assert load(f"shortcut={shortcut}", "depth=56").shortcut.value == shortcut
    for optimizer, logger in itertools.product(["sgd", "adamw"], ["csv", "tensorboard", "mlflow"]):
        cfg = load(f"optimizer={optimizer}", f"logger={logger}")
        assert (cfg.optimizer["name"], cfg.logger["name"]) == (optimizer, logger)


def test_quick_budget_scales_the_length_and_keeps_the_shape():
    cfg = load("budget=quick", "depth=110")
    assert cfg.trainer.max_iters == 1564
    assert list(cfg.schedule.milestones) == [1564 // 2, 1564 * 3 // 4]
    assert cfg.optimizer["lr"] == 0.1 and cfg.depth == 110


@pytest.mark.slow
def test_any_6n_plus_2_depth_by_override():
    assert load("depth=14").depth == 14
    assert load("depth=1202").depth == 1202


@pytest.mark.parametrize("override", ["trainer.no_such_key=1", "shortcut=D", "arch=wide",
                                      "normalization=whitening", "data=svhn", "optimizer=adam",
                                      "optimizer.momentun=0.9", "arch.widen=2",
                                      "trainer.device=tpu", "depth=twenty", "+experiment=nope",
                                      "budget=forever"])
def test_unknown_keys_options_and_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, HydraException, OmegaConfBaseException)):
        load(override)


@pytest.mark.parametrize("override,message", [
    ("depth=21", r"depth=21 is not allowed: depth must be 6n\+2"),
    ("depth=2", r"depth must be 6n\+2"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.val_size=-5", "data.val_size=-5"),
    ("optimizer.lr=0", "optimizer.lr=0 is not allowed"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5"),
    ("schedule.milestones=[48000,32000]", "strictly increasing"),
    ("trainer.max_iters=0", "trainer.max_iters=0"),
    ("trainer.eval_every=-1", "trainer.eval_every=-1"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0"),
    ("schedule.warmup.until_train_error=150", "until_train_error=150"),
    ("trainer.compile_mode=fastest", "trainer.compile_mode=fastest is not allowed"),
])
def test_values_outside_the_rules_are_refused_with_the_value(override, message):
    with pytest.raises(ConfigError, match=message):
        load(override)


@pytest.mark.parametrize("overrides,message", [
    (["trainer.device=cpu"], "trainer.cuda_graph=true is not allowed with trainer.device=cpu"),
    (["trainer.nproc_per_node=2"], "trainer.cuda_graph=true is not allowed with 2 processes"),
    (["trainer.compile=true", "trainer.compile_mode=reduce-overhead"], "captures CUDA graphs itself"),
])
def test_cuda_graph_is_refused_where_it_cannot_apply(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load("trainer.cuda_graph=true", *overrides)


def test_cuda_graph_composes_with_compile_modes_that_leave_graphs_to_it():
    cfg = load("trainer.cuda_graph=true", "trainer.compile=true", "trainer.compile_mode=max-autotune-no-cudagraphs")
    assert cfg.trainer.cuda_graph and cfg.trainer.compile


def test_plain_net_with_a_projection_shortcut_is_refused():
    with pytest.raises(ConfigError, match="shortcut=B has no meaning for arch=plain"):
        load("arch=plain", "shortcut=B")


# -- the learning-rate schedule -----------------------------------------------------

def test_step_schedule_divides_by_ten_at_the_milestones():
    s = LrSchedule(load().schedule, 0.1, depth=20)
    assert not s.warming_up
    lrs = [s.lr(i) for i in (0, 31999, 32000, 47999, 48000, 63999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_deep_nets_warm_up_until_the_training_error_falls_below_80_percent():
    s = LrSchedule(load("depth=110").schedule, 0.1, depth=110)
    assert s.warming_up and s.lr(0) == 0.01
    s.end_warmup_if_done(100, window_error=85.0)
    assert s.warming_up and s.lr(100) == 0.01
    s.end_warmup_if_done(200, window_error=79.0)
    assert not s.warming_up and s.lr(200) == 0.1 and s.warmup_ended_at == 200


def test_warm_up_ends_at_its_cap_even_if_the_error_stays_high():
    s = LrSchedule(load("depth=110", "schedule.warmup.max_iters=300").schedule, 0.1, depth=110)
    s.end_warmup_if_done(200, window_error=90.0)
    assert s.warming_up
    s.end_warmup_if_done(300, window_error=90.0)
    assert not s.warming_up and s.lr(300) == 0.1


def test_milestones_past_the_end_of_a_shortened_run_are_a_warning_not_an_error():
    """`trainer.max_iters=100` alone, the first smoke test people type: the paper's milestones are never
    reached, which the run says in one line."""
    from resnet_cifar.config import warnings

    assert warnings(load("trainer.max_iters=100")) == [
        "schedule.milestones [32000, 48000] lie at or past trainer.max_iters=100: the lr is not divided there "
        "(milestones come with the budget and do not follow trainer.max_iters; to divide it at 50% and 75% of this "
        "run: schedule.milestones=[50,75])"]
    assert warnings(load()) == []
    # the milestones the warning proposes are what the run's arithmetic then uses: no warning
    assert warnings(load("trainer.max_iters=100", "schedule.milestones=[50,75]")) == []


@pytest.mark.slow
def test_help_is_the_projects_page_above_hydras_lists(tmp_path):
    """--help: what the command does, the depth rule of the paper's nets, presets as +experiment=NAME, your
    own model, examples; then Hydra's generated groups (with every preset) and the config."""
    import subprocess

    result = subprocess.run(cli("resnet_cifar.train", "--help"), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("python -m resnet_cifar.train [-m] [KEY=VALUE ...]")
    assert "powered by Hydra" not in page
    for text in ("6n+2", "+experiment=NAME", "python -m resnet_cifar.train -m depth=20,32,44,56 arch=plain,resnet",
                 "--config-dir"):
        assert text in page
    groups, config = page.index("== Configuration groups =="), page.index("== Config ==")
    assert "experiment: batch, fig6, normalization, pipeline, preact, shortcuts, spread, table6" in page[groups:config]
    assert "augment: none, random, static" in page[groups:config]
    assert "arch: plain, preact, resnet" in page[groups:config]
    assert "depth: 20" in page[config:] and not list(tmp_path.iterdir())  # nothing written


def test_the_keys_that_are_not_the_experiment_are_one_list():
    """conf/config.yaml's exclude_keys (Hydra names job folders without them) hold exactly the override keys of
    config.NOT_THE_EXPERIMENT: a key and the keys of the nodes under it that conf/ sets."""
    from omegaconf import OmegaConf

    from resnet_cifar.config import NOT_THE_EXPERIMENT, is_under
    from resnet_cifar.hydra_setup import compose_run

    composed = compose_run()
    excluded = list(composed.hydra.job.config.override_dirname.exclude_keys)
    assert len(excluded) == len(set(excluded))
    assert all(is_under(key, NOT_THE_EXPERIMENT) for key in excluded), excluded
    plain = OmegaConf.to_container(composed, resolve=False)
    expected = set(NOT_THE_EXPERIMENT)
    for key in NOT_THE_EXPERIMENT:  # a node's own keys are overridden by name too (logger.experiment=...)
        node = OmegaConf.select(OmegaConf.create({k: v for k, v in plain.items() if k != "hydra"}), key)
        if hasattr(node, "keys"):
            expected |= {f"{key}.{sub}" for sub in node.keys() if sub not in ("_target_", "name")}
    for option in ("mlflow", "tensorboard"):  # the logger's keys of its options, not only the default's
        node = OmegaConf.to_container(compose_run([f"logger={option}"]).logger)
        expected |= {f"logger.{sub}" for sub in node if sub not in ("_target_", "name")}
    assert set(excluded) == expected, set(excluded) ^ expected
