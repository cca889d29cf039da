"""Where the spread comes from: a seed of its own for each source of randomness (initial weights, data order,
augmentation), each changing only what it names, resumed exactly, and the report's decomposition of the
spread of test error by source with intervals."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import KILL_AT_ITERATION_ENV, TINY_BUDGET, composed_spec, run_train, train_in_process
from resnet_cifar.config import RunSeeds
from resnet_cifar.loop import TrainingLoop
from test_report import write_run
from test_train import numbers, read_metrics


def loop_of(tiny_cifar10, *overrides) -> TrainingLoop:
    return TrainingLoop(composed_spec(*TINY_BUDGET, f"data.root={tiny_cifar10}", *overrides).config, torch.device("cpu"))


def first_batches(loop: TrainingLoop, count: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [loop.data.loader.next_batch() for _ in range(count)]


def same_weights(a: TrainingLoop, b: TrainingLoop) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_seed_alone_sets_everything_as_it_always_has():
    cfg = composed_spec("seed=7").config
    assert RunSeeds.of(cfg) == RunSeeds(7, 7, 7, split=False)
    assert RunSeeds.of(composed_spec("seed=7", "seeds.order=1").config) == RunSeeds(7, 1, 7, split=True)


@pytest.mark.parametrize("pipeline", ["device", "torchvision"])
def test_each_source_changes_only_what_it_names(tiny_cifar10, pipeline):
    base = ["seeds.init=0", "seeds.order=0", "seeds.augment=0", f"data.pipeline={pipeline}", "data.workers=0"]
    reference = loop_of(tiny_cifar10, *base)
    batches = first_batches(reference)
    init = loop_of(tiny_cifar10, *base, "seeds.init=1")
    assert not same_weights(reference, init)
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(batches, first_batches(init)))
    order = loop_of(tiny_cifar10, *base, "seeds.order=1")
    assert same_weights(reference, order)
    assert any(not torch.equal(u, v) for (_, u), (_, v) in zip(batches, first_batches(order)))  # other images
    augment = loop_of(tiny_cifar10, *base, "seeds.augment=1")
    assert same_weights(reference, augment)
    crops = first_batches(augment)
    assert all(torch.equal(u, v) for (_, u), (_, v) in zip(batches, crops))  # the same images, in the same order
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(batches, crops))  # cropped and flipped otherwise


def views_by_image(loader, batches: int) -> dict[int, torch.Tensor]:
    """Each image's view as the loader gave it (labels are the images' indices), over `batches` batches."""
    views = {}
    for _ in range(batches):
        x, y = loader.next_batch()
        views.update(zip(y.tolist(), x))
    return views


def split_device_loader(order: int, augment: int = 0, shard=(0, 1)):
    from resnet_cifar.data.augment import CropFlip
    from resnet_cifar.data.device_loader import DeviceLoader
    from test_data import coordinate_images, raw_input

    return DeviceLoader(coordinate_images(100), torch.arange(100), 16, raw_input(), torch.Generator().manual_seed(order),
                        CropFlip(), shard, crop_generator=torch.Generator().manual_seed(augment))


def test_with_split_seeds_the_order_moves_no_crop_from_one_image_to_another():
    """seeds.order's share of the spread is the order's alone: an image's crop in an epoch depends on
    seeds.augment and the epoch, not on the place the order gave it (both pipelines)."""
    a, b = views_by_image(split_device_loader(order=0), 6), views_by_image(split_device_loader(order=1), 6)
    common = set(a) & set(b)
    assert len(common) > 80 and all(torch.equal(a[i], b[i]) for i in common)
    other = views_by_image(split_device_loader(order=0, augment=1), 6)
    assert any(not torch.equal(a[i], other[i]) for i in a)

    from resnet_cifar.data.augment import CropFlip
    from resnet_cifar.data.torchvision_loader import GlobalBatches

    def crop_seeds(order: int) -> dict[int, int]:
        batches = GlobalBatches(100, 16, RunSeeds(0, order, 5, split=True), CropFlip(), slice(None), (0, 0))
        items = [item for batch, _ in zip(batches, range(6)) for item in batch]
        return dict(items)

    first, second = crop_seeds(0), crop_seeds(1)
    assert first.keys() != second.keys() or list(first) != list(second)  # another order
    assert all(first[i] == second[i] for i in set(first) & set(second))


def test_split_seeds_resume_mid_epoch_and_shard_as_one_process_draws():
    single = split_device_loader(order=3, augment=4)
    for _ in range(9):  # past an epoch boundary
        single.next_batch()
    state = single.state_dict()
    expected = [single.next_batch() for _ in range(5)]
    resumed = split_device_loader(order=99, augment=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
               for (xa, ya), (xb, yb) in zip(expected, (resumed.next_batch() for _ in range(5))))
    one, shards = split_device_loader(3, 4), [split_device_loader(3, 4, shard=(rank, 2)) for rank in range(2)]
    for _ in range(8):
        x, y = one.next_batch()
        parts = [s.next_batch() for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    old = dict(state)
    del old["crop_generator_at_epoch_start"]
    old["crop_generator"] = state["crop_generator_at_epoch_start"]
    from resnet_cifar.errors import RunFolderError

    with pytest.raises(RunFolderError, match="drew crops in batch order; resume it with that version"):
        split_device_loader(3, 4).load_state_dict(old)


@pytest.mark.slow
def test_a_run_with_split_seeds_resumes_to_the_uninterrupted_metrics(tiny_cifar10, tmp_path):
    args = [*TINY_BUDGET, "seeds.order=3", "seeds.augment=4", f"data.root={tiny_cifar10}"]
    straight = train_in_process(*args, run_dir=tmp_path / "straight")
    assert straight["status"] == "completed"
    run_dir = tmp_path / "killed"
    killed = run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={KILL_AT_ITERATION_ENV: "7"})
    assert killed.returncode < 0
    train_in_process(*args, run_dir=run_dir)
    assert numbers(read_metrics(run_dir)) == numbers(read_metrics(tmp_path / "straight"))


@pytest.mark.slow
def test_the_report_says_where_the_spread_comes_from(tmp_path):
    """A 3 x 3 x 3 grid of made-up runs: the initial weights spread the error by 2 points, the order by 0.5, the
    augmentation not at all; the report gives each source's sd with an interval that holds it, and leaves the
    seeds.* keys out of the factors and the comparisons."""
    from multirun_analysis.report import report

    rng = np.random.default_rng(0)
    init_effect, order_effect = [-2.0, 0.0, 2.0], [-0.5, 0.0, 0.5]  # an sd of 2 and of 0.5 points
    for i in range(3):
        for o in range(3):
            for a in range(3):
                overrides = ["budget=quick", f"seeds.init={i}", f"seeds.order={o}", f"seeds.augment={a}"]
                write_run(tmp_path / "spread" / ",".join(overrides), overrides,
                          30.0 + init_effect[i] + order_effect[o] + rng.normal(0, 0.05), iterations=(1564,))
    for seed in range(9):
        write_run(tmp_path / "spread" / f"seed={seed}", ["budget=quick", f"seed={seed}"], 30.0 + rng.normal(0, 2.0),
                  iterations=(1564,))
    account = report([tmp_path / "spread"], tmp_path / "out")
    found = pd.read_csv(tmp_path / "out" / "spread.csv").set_index("source")
    assert set(found.index) == {"init", "order", "augment", "all (seed)"}
    assert found.loc["init", "groups"] == 9 and found.loc["init", "runs"] == 27
    assert found.loc["init", "ci_low"] < 2.0 < found.loc["init", "ci_high"]
    assert found.loc["order", "ci_low"] < 0.5 < found.loc["order", "ci_high"] and found.loc["order", "sd"] < 1.0
    assert found.loc["augment", "ci_low"] < 0.05 < found.loc["augment", "ci_high"]
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert len(table) == 1 and table["n"].tolist() == [36]  # one cell: seeds are not factors
    assert "Where the spread comes from" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "comparisons.md").read_text().startswith("0 comparisons")
    assert "spread.csv" in account
