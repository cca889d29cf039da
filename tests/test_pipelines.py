"""data.pipeline (device | torchvision) and the augment plug-in (random | static | none, or yours): the two
pipelines make the same crops and the same numbers, order and augmentation depend on seed, epoch and position
only, and a torchvision run is a run like any other (resume, DDP shards, older configs)."""
import signal

import numpy as np
import pytest
import torch

from conftest import KILL_AT_ITERATION_ENV, TINY_BUDGET, run_train, train_in_process
from resnet_cifar.config import RunSeeds
from resnet_cifar.data.augment import CropFlip, augmented_once, crop_flip
from resnet_cifar.data.normalization import ModelInput, PerPixelMean
from resnet_cifar.data.torchvision_loader import CifarImages, GlobalBatches, TorchvisionLoader
from test_data import coordinate_images, raw_input, recover_window
from test_train import numbers, read_metrics

CPU = torch.device("cpu")
RAW = raw_input(channels_last=False)  # pixel values as they are
RANDOM, STATIC = CropFlip(once=False), CropFlip(once=True)  # augment=random, augment=static

def as_image(x: torch.Tensor) -> torch.Tensor:
    """A normalized CHW item of RAW back to the HWC uint8 image."""
    return x.permute(1, 2, 0).round().to(torch.uint8)


@pytest.mark.slow
def test_torchvisions_crop_and_flip_are_the_device_pipelines():
    """For the window and flip torchvision drew, the device pipeline's gather gives the same pixels: zero
    padding of 4, a 32x32 window, a left-right flip. What differs is only who draws the offsets."""
    images = coordinate_images(200)
    dataset = CifarImages(images.numpy(), np.zeros(200, dtype=np.int64), RAW, RANDOM)
    windows = []
    for i in range(200):
        out = as_image(dataset[(i, 1000 + i)][0])
        dy, dx, flipped = recover_window(out)
        windows.append((dy, dx, flipped))
        same = crop_flip(images[i:i + 1], torch.tensor([[dy]]), torch.tensor([[dx]]), torch.tensor([[flipped]]))[0]
        assert torch.equal(out, same), i
    dys, dxs, flips = zip(*windows)
    assert set(dys) == set(range(9)) and set(dxs) == set(range(9)) and 0.35 < sum(flips) / 200 < 0.65


def test_both_pipelines_feed_the_model_the_same_numbers_for_the_same_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    per_pixel_mean = PerPixelMean()  # as the paper
    per_pixel_mean.fit(images)
    device_normalize = ModelInput(per_pixel_mean, channels_last=False)
    dataset = CifarImages(images, np.arange(8), device_normalize, RANDOM)
    expected = device_normalize(torch.from_numpy(images))
    for i in range(8):
        x, label = dataset[(i, None)]
        assert label == i and torch.equal(x, expected[i])


def items(sampler: GlobalBatches, batches: int) -> list[list[tuple[int, int | None]]]:
    it = iter(sampler)
    return [next(it) for _ in range(batches)]


def test_order_and_augmentation_depend_on_seed_epoch_and_position_only():
    n, batch = 100, 16  # 6 batches an epoch
    every = slice(0, batch)
    random = items(GlobalBatches(n, batch, RunSeeds.single(0), RANDOM, every, (0, 0)), 14)
    assert random == items(GlobalBatches(n, batch, RunSeeds.single(0), RANDOM, every, (0, 0)), 14)  # the same again
    # started at epoch 1, position 32 (as a resumed run): the very batches an uninterrupted one draws there
    assert items(GlobalBatches(n, batch, RunSeeds.single(0), RANDOM, every, (1, 32)), 4) == random[8:12]
    assert random != items(GlobalBatches(n, batch, RunSeeds.single(1), RANDOM, every, (0, 0)), 14)  # another seed
    # two processes keep the halves of each global batch, with the draws one process makes
    halves = [items(GlobalBatches(n, batch, RunSeeds.single(0), RANDOM, slice(r * 8, r * 8 + 8), (0, 0)), 14) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == random
    # random: an image gets a new seed each epoch; static: the same one; none: no draw
    static = items(GlobalBatches(n, batch, RunSeeds.single(0), STATIC, every, (0, 0)), 12)

    def seeds_by_image(batches, epoch):
        return dict(item for b in batches[epoch * 6:(epoch + 1) * 6] for item in b)

    once, again = seeds_by_image(static, 0), seeds_by_image(static, 1)
    assert len(once.keys() & again.keys()) >= 92 and all(once[i] == again[i] for i in once.keys() & again.keys())
    first, second = seeds_by_image(random, 0), seeds_by_image(random, 1)
    assert all(first[i] != second[i] for i in first.keys() & second.keys())
    assert all(seed is None for b in items(GlobalBatches(n, batch, RunSeeds.single(0), None, every, (0, 0)), 6)
               for _, seed in b)


def test_worker_processes_change_nothing():
    images = coordinate_images(64).numpy()
    loaders = [TorchvisionLoader(images, np.arange(64), 16, RAW, RunSeeds.single(0), RANDOM, workers, CPU, False)
               for workers in (0, 2)]
    for _ in range(6):  # past an epoch
        (xa, ya), (xb, yb) = (loader.next_batch() for loader in loaders)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_static_augmentation_on_the_device_is_one_crop_per_image_drawn_from_the_seed():
    images = coordinate_images(100)
    once = augmented_once(images, STATIC, seed=3)
    assert torch.equal(once, augmented_once(images, STATIC, seed=3))
    assert not torch.equal(once, augmented_once(images, STATIC, seed=4))
    windows = [recover_window(o) for o in once]  # each image a window of itself
    assert all(set(once[i, :, :, 2].unique().tolist()) <= {0, i + 1} for i in range(100))
    assert len(set(windows)) > 30


@pytest.fixture(scope="module")
def torchvision_run(tiny_cifar10, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("torchvision") / "run"
    train_in_process(*TINY_BUDGET, "data.pipeline=torchvision", "data.workers=0", f"data.root={tiny_cifar10}",
                     run_dir=run_dir)
    return numbers(read_metrics(run_dir))


@pytest.mark.slow
def test_a_torchvision_run_killed_and_resumed_ends_as_an_uninterrupted_one(tiny_cifar10, tmp_path, torchvision_run):
    """Through the command with a worker process, killed (-9) after iteration 5, resumed in-process from its
    checkpoint at 4 without workers: the uninterrupted run's metrics, every number."""
    run_dir = tmp_path / "run"
    args = [*TINY_BUDGET, "data.pipeline=torchvision", f"data.root={tiny_cifar10}"]
    killed = run_train(*args, "data.workers=1", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                       env={KILL_AT_ITERATION_ENV: "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    train_in_process(*args, "data.workers=1", run_dir=run_dir)
    assert numbers(read_metrics(run_dir)) == torchvision_run


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["static", "none"])
def test_every_augmentation_trains_in_both_pipelines(tiny_cifar10, tmp_path, augment, torchvision_run):
    for pipeline in ("device", "torchvision"):
        summary = train_in_process(*TINY_BUDGET, f"data.pipeline={pipeline}", f"augment={augment}",
                                   "data.workers=0", f"data.root={tiny_cifar10}", run_dir=tmp_path / pipeline)
        assert summary["status"] == "completed" and summary["config"]["augment"]["name"] == augment
    assert numbers(read_metrics(tmp_path / "torchvision")) != torchvision_run  # the augmentation is used


@pytest.mark.parametrize("given,read_as", [(True, "random"), (False, "none"), ("static", "static")])
def test_an_older_recorded_data_augment_is_read_as_the_augment_option_of_its_name(given, read_as):
    from conftest import composed_spec
    from resnet_cifar.upgrade import upgrade

    recorded = composed_spec().recorded
    recorded = {**{k: v for k, v in recorded.items() if k != "augment"},
                "data": {**recorded["data"], "augment": given}}
    today = upgrade(recorded)
    assert "augment" not in today["data"] and today["augment"] == composed_spec(f"augment={read_as}").recorded["augment"]
