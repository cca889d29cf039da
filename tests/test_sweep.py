"""Multiruns: presets, folders named by overrides, relaunch after a kill, failures, launchers."""
import json

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from conftest import KILL_AT_ITERATION_ENV, run_train, train_in_process
from resnet_cifar.errors import RunFolderError
from resnet_cifar.hydra_setup import compose_run, conf
from resnet_cifar.run_folder import RunFolder
from resnet_cifar.sweep import job_dirs, job_overrides

# Two iterations, one evaluation: a job in about a second.
SWEEP_BUDGET = ("data.batch_size=16", "trainer.max_iters=2", "trainer.eval_every=2",
                "trainer.checkpoint_every=1", "schedule.milestones=[1]", "trainer.eval_batch_size=100")


def sweep(*overrides, data, sweep_dir, env=None):
    return run_train("-m", *overrides, *SWEEP_BUDGET, f"data.root={data}", f"hydra.sweep.dir={sweep_dir}",
                     cwd=sweep_dir.parent, env=env)


def summaries(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def grid(*overrides):
    """The job overrides of `python -m resnet_cifar.train -m OVERRIDES`, composed as Hydra's multirun does."""
    with conf():
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration("config", list(overrides), run_mode=RunMode.MULTIRUN)
    return [dict(o.split("=", 1) for o in job) for job in job_overrides(cfg)], cfg


@pytest.mark.parametrize("preset,size,varying", [
    ("table6", 25, {"depth": {"20", "32", "44", "56", "110"}, "seed": {"0", "1", "2", "3", "4"}}),
    ("fig6", 8, {"arch": {"plain", "resnet"}, "depth": {"20", "32", "44", "56"}}),
    ("shortcuts", 6, {"shortcut": {"A", "B", "C"}, "depth": {"20", "56"}}),
    ("normalization", 5, {"normalization": {"per_pixel_mean", "channel_stats", "imagenet", "unit", "raw"}}),
    ("batch", 4, {"data.batch_size": {"128", "256"}, "trainer.nproc_per_node": {"1", "2"}}),
    ("pipeline", 4, {"data.pipeline": {"device", "torchvision"}, "augment": {"random", "static"}}),
    ("spread", 27, {"seeds.init": {"0", "1", "2"}, "seeds.order": {"0", "1", "2"}, "seeds.augment": {"0", "1", "2"}}),
    ("preact", 6, {"arch": {"resnet", "preact"}, "depth": {"20", "56", "110"}}),
])
def test_presets_expand_to_their_grid(preset, size, varying):
    jobs, _ = grid(f"+experiment={preset}")
    assert len(jobs) == size
    for key, values in varying.items():
        assert {job[key] for job in jobs} == values
    assert all(job["+experiment"] == preset for job in jobs)


def test_command_line_overrides_combine_with_a_preset():
    jobs, _ = grid("+experiment=table6", "seed=0,1", "budget=quick")
    assert len(jobs) == 10
    assert {job["seed"] for job in jobs} == {"0", "1"}
    assert all(job["budget"] == "quick" and job["shortcut"] == "A" for job in jobs)


def test_job_folders_are_named_by_overrides_whatever_the_order(tmp_path):
    _, cfg = grid("depth=20,56", "arch=plain,resnet", f"hydra.sweep.dir={tmp_path}", "data.root=/somewhere")
    _, reordered = grid("arch=resnet,plain", "depth=56,20", f"hydra.sweep.dir={tmp_path}")
    names = [d.name for d in job_dirs(cfg)]
    assert names[0] == "arch=plain,depth=20"  # data.root does not name the experiment
    assert sorted(names) == sorted(d.name for d in job_dirs(reordered))


ABLATION = ("optimizer.lr=0.1", "optimizer.weight_decay=0.0001", "optimizer.momentum=0.9", "schedule.gamma=0.1",
            "schedule.warmup.lr=0.01", "schedule.warmup.min_depth=110", "schedule.warmup.max_iters=2000",
            "schedule.warmup.until_train_error=80.0", "schedule.warmup.window=100", "trainer.precision=fp32",
            "trainer.compile_mode=default", "normalization=per_pixel_mean")


@pytest.mark.slow
def test_a_sweep_with_many_overrides_names_its_jobs_within_the_limit_and_finds_them_again(tiny_cifar10, tmp_path):
    """A dozen overrides made names over 255 bytes (OSError: File name too long in every job). Now: a readable
    prefix and a hash of all overrides, the same on relaunch, the full overrides in the folder."""
    sweep_dir = tmp_path / "sweep"
    result = sweep("depth=8", "seed=0,1", *ABLATION, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr
    done = summaries(sweep_dir)
    assert len(done) == 2 and all(s["status"] == "completed" for s in done.values())
    for name, summary in done.items():
        assert len(name.encode()) <= 255 and name.startswith("data.batch_size=16,depth=8,normalization=")
        assert set(ABLATION) <= set(summary["overrides"])
        assert set(ABLATION) <= set((sweep_dir / name / ".hydra" / "overrides.yaml").read_text().replace("- ", "").split())
    seeds = {summary["config"]["seed"] for summary in done.values()}
    assert seeds == {0, 1}  # two names, one per job
    _, cfg = grid("depth=8", "seed=1,0", *reversed(ABLATION), *SWEEP_BUDGET, f"hydra.sweep.dir={sweep_dir}")
    assert sorted(d.name for d in job_dirs(cfg)) == sorted(done)
    again = sweep("depth=8", "seed=0,1", *ABLATION, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert again.returncode == 0 and "2 done, 0 to resume, 0 new" in again.stderr


@pytest.mark.slow
def test_the_users_command_runs_every_job(tiny_cifar10, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep("depth=20,32,44,56", "arch=plain,resnet", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr
    assert "sweep of 8 jobs" in result.stderr and "0 done, 0 to resume, 8 new" in result.stderr
    done = summaries(sweep_dir)
    assert len(done) == 8 and all(s["status"] == "completed" for s in done.values())
    for name in done:
        assert {"metrics.csv", "model.pt", "checkpoint.pt", "train.log"} <= {p.name for p in (sweep_dir / name).iterdir()}
    assert "arch=plain,data.batch_size=16,depth=56," in " ".join(done)


@pytest.mark.slow
def test_a_killed_sweep_relaunched_skips_finished_jobs_and_resumes_the_rest(tiny_cifar10, tmp_path):
    sweep_dir = tmp_path / "sweep"
    first = sweep("depth=8", "arch=plain,resnet", data=tiny_cifar10, sweep_dir=sweep_dir)  # two jobs of the grid
    assert first.returncode == 0, first.stderr
    finished = {name: (sweep_dir / name / "metrics.csv").read_bytes() for name in summaries(sweep_dir)}

    grid_args = ("depth=8,14", "arch=plain,resnet")
    killed = sweep(*grid_args, data=tiny_cifar10, sweep_dir=sweep_dir, env={KILL_AT_ITERATION_ENV: "1"})
    assert killed.returncode == -9  # the whole sweep process died in the first job it trained
    assert "2 done, 0 to resume, 2 new" in killed.stderr

    again = sweep(*grid_args, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert again.returncode == 0, again.stderr
    assert "2 done, 1 to resume, 1 new" in again.stderr
    assert again.stderr.count("already completed") == 2 and "resuming from" in again.stderr
    done = summaries(sweep_dir)
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values())
    assert all((sweep_dir / name / "metrics.csv").read_bytes() == data for name, data in finished.items())


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_complete(tiny_cifar10, tmp_path):
    """A job that fails only once it runs (its held-out split does not fit the data it finds) is recorded;
    the sweep goes on and exits non-zero listing it."""
    sweep_dir = tmp_path / "sweep"
    result = sweep("depth=8", "data.val_size=0,1000", data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 1
    assert "1 of 2 jobs did not complete" in result.stderr and "data.val_size=1000" in result.stderr
    done = summaries(sweep_dir)
    failed = next(s for name, s in done.items() if "val_size=1000" in name)
    assert failed["status"] == "failed" and "data.val_size=1000 is not allowed" in failed["error"]
    assert next(s for name, s in done.items() if "val_size=0" in name)["status"] == "completed"


@pytest.mark.parametrize("overrides,message", [
    (("arch=plain,resnet", "shortcut=B"), "job arch=plain: arch=plain (conf/arch/plain.yaml): shortcut=B has no "
                                          "meaning for arch=plain"),
    (("depth=8,21",), "job depth=21: arch=resnet (conf/arch/resnet.yaml): depth=21 is not allowed: depth must be "
                      "6n+2"),
    (("optimizer.lr=0.1,-1",), "job optimizer.lr=-1: optimizer.lr=-1 is not allowed"),
])
def test_a_grid_with_a_job_that_cannot_run_is_refused_before_any_runs(tiny_cifar10, tmp_path, overrides, message):
    """Every job composed and checked (config, plug-ins) before the first starts: one line, exit 2, no folder."""
    sweep_dir = tmp_path / "sweep"
    result = sweep("depth=8", *overrides, data=tiny_cifar10, sweep_dir=sweep_dir) if "depth=8,21" not in overrides \
        else sweep(*overrides, data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the sweep would run a job that cannot run"), lines
    assert message in lines[0]
    assert not sweep_dir.exists()


@pytest.mark.slow
def test_every_job_of_every_preset_passes_the_checks_a_sweep_makes():
    """What CheckJobs does before a sweep, for the shipped presets: each job's config and plug-ins."""
    from resnet_cifar.config import validate
    from resnet_cifar.checks import check_plugins
    from conftest import composed_spec

    checked = set()
    for preset in ("fig6", "table6", "shortcuts", "normalization", "batch", "pipeline", "preact", "spread"):
        jobs, _ = grid(f"+experiment={preset}")
        for job in jobs:
            spec = composed_spec(*(f"{k}={v}" for k, v in job.items()))
            key = json.dumps({**spec.recorded, "seed": None}, sort_keys=True)
            if key not in checked:
                validate(spec.config)
                check_plugins(spec.config)
                checked.add(key)
    assert len(checked) >= 20


def test_a_run_folder_in_use_is_refused(tiny_cifar10, tmp_path):
    run_dir = tmp_path / "run"
    holder = RunFolder(run_dir)
    with holder.held():  # as another process would hold it: flock conflicts between two opens
        holder.write_hydra_files({"depth": 8}, [], None)  # a run of its own: .lock says who holds the folder
        with pytest.raises(RunFolderError, match=r"is in use by another process \(pid"):
            train_in_process(*SWEEP_BUDGET, "depth=8", f"data.root={tiny_cifar10}", run_dir=run_dir)
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_and_cluster_launchers_complete_a_sweep(tiny_cifar10, tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=5"]
    result = sweep("depth=8", "arch=plain,resnet", f"hydra/launcher={launcher}", *extra,
                   data=tiny_cifar10, sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr
    done = summaries(sweep_dir)
    assert len(done) == 2 and all(s["status"] == "completed" for s in done.values())
    if launcher == "joblib":  # two jobs at once on 2 cores: one thread each, no oversubscription
        assert all(s["num_threads"] == 1 for s in done.values()), [s["num_threads"] for s in done.values()]


def test_slurm_preset_gives_each_job_its_gpus_and_requeues():
    cfg = compose_run(["hydra/launcher=slurm", "trainer.nproc_per_node=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 1 and launcher.max_num_timeout > 0


def test_hydras_private_pieces_still_do_what_the_sweeps_rely_on():
    """resnet_cifar/hydra_internals.py wraps the two pieces of Hydra without a public API: if a Hydra release
    changes them, this fails here rather than a relaunched sweep naming the wrong folders."""
    import hydra

    from resnet_cifar.hydra_internals import expand_grid, overrides_dirname

    assert expand_grid(["arch=plain,resnet", "depth=20", "seed=0,1"]) == [
        ["arch=plain", "depth=20", "seed=0"], ["arch=plain", "depth=20", "seed=1"],
        ["arch=resnet", "depth=20", "seed=0"], ["arch=resnet", "depth=20", "seed=1"]], hydra.__version__
    assert overrides_dirname(["seed=1", "arch=plain", "data.root=/x", "+experiment=fig6"], ["data.root"], ",", "=") \
        == "+experiment=fig6,arch=plain,seed=1", hydra.__version__


@pytest.mark.parametrize("launcher", ["joblib", "basic", "joblib hydra.launcher.prefer=threads"])
def test_a_sweeps_stop_handling_is_installed_for_worker_launchers_only_and_removed_after(launcher, tmp_path):
    """The signals of a joblib sweep's process pass through sweep_stop.StopJobsFirst while its jobs run; the
    basic launcher's jobs handle their own (they run in this process); afterwards the process is as before."""
    import signal

    from resnet_cifar.sweep_stop import StopJobsFirst, in_a_worker

    cfg = compose_run([f"hydra/launcher={launcher.split()[0]}", *launcher.split()[1:], f"hydra.sweep.dir={tmp_path}"])
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    assert in_a_worker()  # as a joblib worker sees itself: no sweep's handler
    stop = StopJobsFirst()
    stop.on_multirun_start(cfg)
    try:
        during = {s: signal.getsignal(s) for s in before}
        sweeps_own_process = not in_a_worker()  # joblib with n_jobs=1 runs its jobs here
    finally:
        stop.on_multirun_end(cfg)
    assert all(h == stop._stop for h in during.values()) == (launcher == "joblib"), during  # not for threads
    assert sweeps_own_process == (launcher == "joblib")
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_a_joblib_job_starts_its_own_dataloader_and_ddp_workers(tiny_cifar10, tmp_path):
    """In joblib's (loky) worker the default start method is loky's: a job's DataLoader workers failed there
    ("'Process' object has no attribute 'env'") and so did its spawned DDP workers ("cannot find context for
    'loky'"). Both start the platform's way now."""
    from conftest import TINY_BUDGET

    result = run_train("-m", *TINY_BUDGET, f"data.root={tiny_cifar10}", "hydra/launcher=joblib",
                       "hydra.launcher.n_jobs=2", "data.pipeline=torchvision", "data.workers=1",
                       "trainer.nproc_per_node=1,2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")]
    assert sorted(s["processes"] for s in summaries) == [1, 2] and all(s["status"] == "completed" for s in summaries)
