import os
import pickle
import re

import numpy as np
import pytest
import torch

from conftest import break_batch_file, closed_port_url, write_cifar10, write_cifar100
from resnet_cifar.config import Dataset
from resnet_cifar.data.augment import PAD, CropFlip, crop_flip, draw_crops
from resnet_cifar.data.cifar import load_cifar, split_validation
from resnet_cifar.data.device_loader import DeviceLoader
from resnet_cifar.data.normalization import (
    ChannelStats, FixedMeanStd, ModelInput, PerPixelMean, ZCAWhitening,
)
from resnet_cifar.data.stream import eval_batches
from resnet_cifar.errors import ConfigError, DataError

CPU = torch.device("cpu")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def raw_input(channels_last: bool = True) -> ModelInput:
    """Pixel values as they are (normalization=raw), as the net's input."""
    raw = FixedMeanStd([0.0] * 3, [1.0] * 3, pixel_scale=1)
    raw.fit(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    return ModelInput(raw, channels_last)


# -- reading the official layout ----------------------------------------------

@pytest.mark.parametrize("bytes_keys", [False, True])
def test_reads_the_official_cifar10_layout(tmp_path, bytes_keys):
    write_cifar10(tmp_path, n_train=50, n_test=20, learnable=False, bytes_keys=bytes_keys)
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    d = load_cifar(Dataset.cifar10, tmp_path, allow_download=False)
    assert d.train_images.shape == (50, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (20, 32, 32, 3)
    assert d.train_labels.dtype == np.int64 and d.num_classes == 10
    # planes R, G, B of the row become the last (channel) axis
    first = raw["data"][0]
    assert np.array_equal(d.train_images[0, :, :, 0], first[:1024].reshape(32, 32))
    assert np.array_equal(d.train_images[0, :, :, 2], first[2048:].reshape(32, 32))
    assert d.train_labels[: len(raw["labels"])].tolist() == raw["labels"]


def test_reads_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    d = load_cifar(Dataset.cifar100, tmp_path, allow_download=False)
    assert d.num_classes == 100 and d.train_images.shape == (400, 32, 32, 3)
    assert d.train_labels.max() == 99


def test_missing_folder_names_path_and_both_fixes(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar(Dataset.cifar10, tmp_path / "nowhere", allow_download=False)
    message = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "data.root" in message and "drop data.download=false" in message


def test_cifar100_files_under_a_cifar10_setting_are_named(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(DataError, match="did you mean data=cifar100"):
        load_cifar(Dataset.cifar10, tmp_path, allow_download=False)
    # and a CIFAR-100 file put in the CIFAR-10 folder
    write_cifar10(tmp_path, n_train=50, n_test=20)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        (tmp_path / "cifar-100-python" / "train").read_bytes())
    with pytest.raises(DataError, match="no 'labels' entry.*cifar-100-python"):
        load_cifar(Dataset.cifar10, tmp_path, allow_download=False)


@pytest.mark.parametrize("how,message", [
    ("truncated", "cannot be read as a CIFAR pickle"),
    ("not a pickle", "cannot be read as a CIFAR pickle"),
    ("wrong shape", r"shape \(N, 3072\), found uint8 \(64, 1024\)"),
    ("wrong dtype", r"must be a uint8 array .*found float32"),
    ("labels out of range", r"labels must lie in 0..9, found 0..10"),
    ("label count", "expected 64 integer labels"),
])
def test_broken_batch_files_are_refused_clearly(tmp_path, how, message):
    write_cifar10(tmp_path, n_train=320, n_test=20)
    break_batch_file(tmp_path / "cifar-10-batches-py" / "data_batch_2", how)
    with pytest.raises(DataError, match=message) as e:
        load_cifar(Dataset.cifar10, tmp_path, allow_download=False)
    assert "data_batch_2" in str(e.value)


# -- validation split -----------------------------------------------------------

def test_validation_split_is_class_balanced_disjoint_and_fixed():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(1).shuffle(labels)
    train, val = split_validation(labels, 100, 10)
    assert np.bincount(labels[val], minlength=10).tolist() == [10] * 10
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 500
    again = split_validation(labels, 100, 10)
    assert np.array_equal(val, again[1])
    assert len(split_validation(labels, 0, 10)[1]) == 0


@pytest.mark.parametrize("val_size", [105, 500, 5000])
def test_impossible_validation_sizes_are_refused(val_size):
    with pytest.raises(ConfigError, match=f"data.val_size={val_size}"):
        split_validation(np.repeat(np.arange(10), 50), val_size, 10)


# -- normalization ------------------------------------------------------------------

def test_normalization_statistics_come_from_the_training_split():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    mean, std = PerPixelMean().statistics(images)
    assert mean.shape == (32, 32, 3)
    assert np.allclose(mean, images.mean(0))
    mean, std = ChannelStats().statistics(images)
    assert np.allclose(mean, images.reshape(-1, 3).mean(0))
    assert np.allclose(std, images.reshape(-1, 3).std(0))
    mean, std = FixedMeanStd(IMAGENET_MEAN, IMAGENET_STD).statistics(images)
    assert np.allclose(mean / 255, IMAGENET_MEAN) and np.allclose(std / 255, IMAGENET_STD)


def test_per_pixel_mean_centres_every_pixel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    norm = PerPixelMean()
    norm.fit(images)
    x = ModelInput(norm, channels_last=True)(torch.from_numpy(images))
    assert x.shape == (64, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert x.mean(0).abs().max() < 1e-5
    assert x.abs().max() <= 1.0
    plain = raw_input(channels_last=False)(torch.from_numpy(images))
    assert plain.is_contiguous() and torch.equal(plain, torch.from_numpy(images).permute(0, 3, 1, 2).float())


@pytest.fixture(scope="module")
def correlated_images() -> np.ndarray:
    """400 images of one strong shared component, then pixel noise."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 1, 1, 1)) * 40
    return np.clip(128 + base + rng.normal(size=(400, 32, 32, 3)) * 20, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted_zca(correlated_images) -> ZCAWhitening:
    """ZCA whitening fitted on them: the eigendecomposition of a 3072 x 3072 covariance, seconds on a CPU, so
    once for the tests that read it (none changes it)."""
    zca = ZCAWhitening(epsilon=1e-3)
    zca.fit(correlated_images)
    return zca


@pytest.mark.slow
def test_a_fitted_normalization_is_its_state_dict_and_loads_into_a_fresh_one(fitted_zca):
    """What a run folder keeps (normalization.pt): a resumed run and evaluate get exactly these numbers."""
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    channel_stats = ChannelStats()
    channel_stats.fit(rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8))
    for fitted, fresh in ((channel_stats, ChannelStats()), (fitted_zca, ZCAWhitening(1e-3))):
        assert not torch.equal(fitted(images), fresh(images))
        fresh.load_state_dict(fitted.state_dict())
        assert torch.equal(fitted(images), fresh(images))


@pytest.mark.slow
def test_zca_whitening_decorrelates_the_training_split_and_mixes_pixels(correlated_images, fitted_zca):
    """Not an affine map per pixel or channel: each output value mixes the whole image."""
    images, zca = correlated_images, fitted_zca
    white = zca(torch.from_numpy(images)).permute(0, 2, 3, 1).reshape(400, -1).double().numpy()
    raw = images.reshape(400, -1) / 255.0
    def mean_abs_correlation(x):
        c = np.corrcoef(x[:, :300].T)
        return np.abs(c[~np.eye(len(c), dtype=bool)]).mean()
    assert mean_abs_correlation(raw) > 0.5 > 0.2 > mean_abs_correlation(white)
    one = torch.from_numpy(images[:1].copy())
    changed = one.clone()
    changed[0, 0, 0, 0] += 1
    assert (zca(changed) != zca(one)).sum() > 100  # one pixel moved many outputs


# -- augmentation -------------------------------------------------------------------

def coordinate_images(n: int) -> torch.Tensor:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = image id + 1 (0 only in the padding)."""
    rows = torch.arange(1, 33).view(1, 32, 1).expand(n, 32, 32)
    cols = torch.arange(1, 33).view(1, 1, 32).expand(n, 32, 32)
    ids = torch.arange(1, n + 1).view(n, 1, 1).expand(n, 32, 32)
    return torch.stack([rows, cols, ids], dim=-1).to(torch.uint8)


def recover_window(out: torch.Tensor) -> tuple[int, int, bool]:
    """(dy, dx, flipped) of one cropped image, checking every pixel agrees with one window."""
    r, c = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    inside = out[:, :, 0] > 0
    dy = {int(v) for v in (out[:, :, 0].long() - 1 - r + PAD)[inside]}
    for flipped in (False, True):
        cc = 31 - c if flipped else c
        dx = {int(v) for v in (out[:, :, 1].long() - 1 - cc + PAD)[inside]}
        if len(dx) == 1:
            break
    assert len(dy) == 1 and len(dx) == 1, "pixels of one image come from more than one window"
    return dy.pop(), dx.pop(), flipped


def test_crops_vary_per_image_stay_in_bounds_and_half_are_flipped():
    images = coordinate_images(255)  # ids fit in uint8
    out = crop_flip(images, *draw_crops(len(images), torch.Generator().manual_seed(0), CPU))
    assert out.shape == images.shape and out.dtype == torch.uint8
    windows = [recover_window(o) for o in out]
    dys, dxs, flips = zip(*windows)
    assert min(dys) >= 0 and max(dys) <= 2 * PAD and min(dxs) >= 0 and max(dxs) <= 2 * PAD
    assert len(set(dys)) == 2 * PAD + 1 and len(set(dxs)) == 2 * PAD + 1  # every offset occurs
    assert 0.4 < sum(flips) / len(flips) < 0.6
    # each crop comes from its own image; padding is zeros
    ids = out[:, :, :, 2].long()
    assert all(set(ids[i].unique().tolist()) <= {0, i + 1} for i in range(len(out)))
    # a centred crop (offset PAD) reproduces the original view
    centred = [i for i, (dy, dx, f) in enumerate(windows) if dy == dx == PAD and not f]
    assert centred and all(torch.equal(out[i], images[i]) for i in centred)


def make_loader(n=100, batch=16, augment=True, seed=0):
    images = coordinate_images(n)
    labels = torch.arange(n)
    return DeviceLoader(images, labels, batch, raw_input(), torch.Generator().manual_seed(seed),
                        CropFlip() if augment else None)


def test_each_epoch_is_a_fresh_permutation_of_full_batches():
    loader = make_loader(n=100, batch=16, augment=False)
    assert loader.batches_per_epoch == 6
    epochs = []
    for _ in range(2):
        seen = [loader.next_batch()[1] for _ in range(6)]
        epochs.append(torch.cat(seen))
    for labels in epochs:
        assert len(labels) == 96 and len(labels.unique()) == 96  # distinct images, last 4 dropped
    assert not torch.equal(epochs[0], epochs[1])
    x, y = loader.next_batch()
    assert loader.epoch == 2
    # without augmentation the training view is the original image
    assert torch.equal(x, coordinate_images(100)[y].permute(0, 3, 1, 2).float())


def test_loader_resumes_exactly_from_its_state():
    a = make_loader()
    for _ in range(9):  # past an epoch boundary
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(5)]
    b = make_loader(seed=123)
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(expected, (b.next_batch() for _ in range(5))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_evaluation_sees_every_original_image_once():
    images = coordinate_images(70)
    batches = list(eval_batches(images, torch.arange(70), 32, raw_input()))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    assert torch.equal(torch.cat([x for x, _ in batches]), images.permute(0, 3, 1, 2).float())


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(ConfigError, match="data.batch_size gives a global batch of 200"):
        make_loader(n=100, batch=200)


def use_archive(monkeypatch, url: str, md5: str) -> None:
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CIFAR10, "url", url)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5)


def test_download_goes_through_torchvisions_downloader(tmp_path, monkeypatch, archive_server):
    """The real download path: torchvision fetches the archive over HTTP, checks its md5, unpacks it;
    the release's files land in the official folder and nothing else stays behind."""
    use_archive(monkeypatch, archive_server.url, archive_server.md5)
    root = tmp_path / "new" / "root"
    d = load_cifar(Dataset.cifar10, root, allow_download=True)
    assert d.train_images.shape == (320, 32, 32, 3)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no archive, no staging folder
    assert len(archive_server.downloads) == 1
    load_cifar(Dataset.cifar10, root, allow_download=True)  # there now: not fetched again
    assert len(archive_server.downloads) == 1


@pytest.mark.parametrize("failure", ["corrupted archive", "no internet"])
def test_a_failed_download_says_what_to_do_and_leaves_no_folder(tmp_path, monkeypatch, archive_server, failure):
    if failure == "corrupted archive":
        use_archive(monkeypatch, archive_server.url, "0" * 32)
    else:
        use_archive(monkeypatch, closed_port_url(), archive_server.md5)
    (tmp_path / "data").mkdir()
    root = tmp_path / "data" / "cifar" / "root"
    with pytest.raises(DataError) as e:
        load_cifar(Dataset.cifar10, root, allow_download=True)
    message = str(e.value)
    assert "downloading cifar10 from http://127.0.0.1:" in message and "failed" in message
    assert f"put the official cifar-10-batches-py/ folder under {root}" in message
    assert "data.download=false" in message and "docs/guide/setup.md, Data" in message
    assert list((tmp_path / "data").iterdir()) == []  # the folders the download made are gone again


def test_shards_of_a_global_batch_equal_the_single_process_batch():
    """Two processes each keep half of the same global batch, augmented as one process would."""
    single = make_loader(n=100, batch=16)
    shards = [DeviceLoader(coordinate_images(100), torch.arange(100), 16, raw_input(),
                           torch.Generator().manual_seed(0), CropFlip(), shard=(rank, 2)) for rank in range(2)]
    for _ in range(8):  # across an epoch boundary
        x, y = single.next_batch()
        parts = [s.next_batch() for s in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


class RunsACommand:
    """What a hostile "CIFAR copy" can put in a pickle: reading it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_a_data_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, name):
    folder = write_cifar10(tmp_path / "root", n_train=50, n_test=20) / "cifar-10-batches-py"
    marker = tmp_path / "the command ran"
    content = pickle.loads((folder / name).read_bytes(), encoding="latin1")
    content["extra"] = RunsACommand(f"touch '{marker}'")  # the batch itself stays valid
    (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=f"{name} was refused: it asks to call posix.system"):
        load_cifar(Dataset.cifar10, tmp_path / "root", allow_download=False)
    assert not marker.exists()
    pickle.loads((folder / name).read_bytes(), encoding="latin1")  # the plain pickle.load it replaced:
    assert marker.exists()  # the file is a real attack


@pytest.mark.parametrize("damage,message", [
    ("no test images", "test_batch holds no images"),
    ("no images in a training batch", "data_batch_2 holds no images"),
    ("meta without class names", "'label_names' must list the 10 class names, found NoneType"),
    ("meta with 9 class names", "'label_names' must list the 10 class names, found 9 entries"),
])
def test_empty_batches_and_a_meta_file_without_class_names_are_refused(tmp_path, damage, message):
    folder = write_cifar10(tmp_path / "root", n_train=50, n_test=20) / "cifar-10-batches-py"
    name = {"no test images": "test_batch", "no images in a training batch": "data_batch_2"}.get(damage, "batches.meta")
    content = pickle.loads((folder / name).read_bytes(), encoding="latin1")
    if name == "batches.meta":
        content["label_names"] = content["label_names"][:9] if "9" in damage else None
        if content["label_names"] is None:
            del content["label_names"]
    else:
        content["data"], content["labels"] = content["data"][:0], []
    (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=re.escape(message)):
        load_cifar(Dataset.cifar10, tmp_path / "root", allow_download=False)


def test_class_names_come_from_the_meta_file(tmp_path):
    write_cifar10(tmp_path, n_train=50, n_test=20, bytes_keys=True)
    assert load_cifar(Dataset.cifar10, tmp_path, allow_download=False).class_names == tuple(
        f"class{c}" for c in range(10))
