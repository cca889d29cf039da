"""One run in its folder: start or resume, train, and record how it ended.

Every process of a data-parallel run calls `train_run`; only the first writes, and
only through the RunFolder. Stop signals are caught around the loop: the step
in flight finishes, a checkpoint is written, the run is recorded as
interrupted, and a handler that was there before (submitit's requeue) is then
called.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .contract import FINAL_METRICS, TRACKER_RUN_ID, Status
from .cores import free_at_run_start
from .models import takes_shortcut
from .distributed import World, prepare_process
from .errors import Diverged, UserError
from .loop import TrainingLoop
from .provenance import command_line, cuda_versions, device_name, gpu_uuids, library_versions, slurm_job, source_version
from .run_folder import RunFolder
from .run_spec import RunSpec
from .signals import Interrupted, StopRequest
from .trackers import GuardedTracker, build_tracker

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def train_run(spec: RunSpec, folder: RunFolder, world: World = World()) -> dict | None:
    """Train the run in `folder` to its end, resuming from its checkpoint; return its summary (on the
    first process). The caller holds the folder and has checked that the run is not completed."""
    cfg = spec.config
    device, chosen = prepare_process(cfg.trainer.device, cfg.trainer.threads, world, free_at_run_start())
    log.info("%s on %s", chosen, device)
    normalization = folder.load_normalization()  # as fitted when the run started: resuming never refits
    loop = TrainingLoop(cfg, device, world, normalization_state=normalization)
    loop.resume_from(folder)
    main = world.is_main
    if main and normalization is None:
        folder.save_normalization(loop.data.normalization.state_dict())
    if main:
        folder.start(spec, iteration=loop.iteration, max_iters=cfg.trainer.max_iters, params=loop.params,
                     device=str(loop.device), device_name=device_name(loop.device), processes=world.world_size,
                     global_batch=loop.data.global_batch, **loop.data.sizes(),
                     cuda_graph=loop.step.graph is not None,
                     num_threads=torch.get_num_threads(), versions=library_versions(), slurm=slurm_job(),
                     gpus=gpu_uuids(loop.device, world), cuda=cuda_versions(loop.device), source=source_version(),
                     command=command_line(), started_at=_now(),
                     data_root=str(Path(cfg.data.root).expanduser().absolute()))
    else:
        gpu_uuids(loop.device, world)  # a collective: every process takes part
    shortcut = f" (shortcut {cfg.shortcut.value})" if takes_shortcut(cfg) else ""  # a plain net has none
    log.info("%s-%d%s, %d parameters, on %s x %d; run folder %s", cfg.arch["name"], cfg.depth, shortcut,
             loop.params, loop.device, world.world_size, folder.path)
    stop = StopRequest()
    tracker: GuardedTracker | None = None
    try:
        with stop, logging_redirect_tqdm(), tqdm(total=cfg.trainer.max_iters, initial=loop.iteration,
                                                 disable=None if main else True, dynamic_ncols=True,
                                                 desc="train", unit="it") as bar:
            if main:  # started while a stop signal can end the run: a server that does not answer is not waited for
                tracker = GuardedTracker.start(
                    lambda: build_tracker(cfg, folder.path, spec.recorded, loop.iteration,
                                          folder.summary.get(TRACKER_RUN_ID)), stop, loop.iteration)
                if tracker is not None and tracker.run_id:
                    folder.record(**{TRACKER_RUN_ID: tracker.run_id})

            def progress(done: int, row: dict | None) -> None:
                bar.update(done - bar.n)
                if row:
                    bar.set_postfix(test_error=f"{row['test_error']:.2f}%", refresh=False)
                    if tracker:
                        tracker.log(row)

            final = loop.fit(folder, stop, progress)
        if not final and main:  # it had trained to the end; a crash kept that from being recorded
            final = folder.metrics.last_row()
    except BaseException as e:
        status = (Status.diverged if isinstance(e, Diverged)
                  else Status.interrupted if isinstance(e, (Interrupted, KeyboardInterrupt)) else Status.failed)
        if main:  # recorded first: a tracker that hangs in close() cannot leave the run 'running'
            try:
                folder.record(status=status, iteration=loop.iteration, error=f"{type(e).__name__}: {e}")
            except UserError as not_recorded:  # e.g. the disk that failed the run is still full
                log.warning("%s", not_recorded)
        if tracker is not None:
            tracker.close(status.value)
        if isinstance(e, Interrupted):
            log.warning("%s", e)  # here: the handler passed on may end the process (submitit's exits)
            stop.pass_on()  # e.g. submitit's handler, which requeues the job
        raise
    clock = loop.clock
    if main:
        folder.save_model(loop.model.state_dict())
        folder.record(status=Status.completed, iteration=loop.iteration, **{k: final.get(k) for k in FINAL_METRICS},
                      wall_time_s=round(clock.elapsed_s, 2),
                      images_per_s=round(loop.iteration * loop.data.global_batch / clock.train_s, 1),
                      warmup_ended_at=loop.schedule.warmup_ended_at, ended_at=_now())
    if tracker is not None:
        tracker.close(Status.completed.value)
    log.info("completed: test error %s%% after %d iterations, %.1f min", final.get("test_error"), loop.iteration,
             clock.elapsed_s / 60)
    return folder.summary
