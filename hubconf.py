"""torch.hub entry points (no network: torch.hub.load(REPO_DIR, NAME, source="local", ...)).

    net = torch.hub.load(REPO_DIR, "cifar_resnet", source="local", depth=56)          # a fresh ResNet-56
    run = torch.hub.load(REPO_DIR, "from_run", source="local", run_dir="multirun/fig6/arch=resnet,depth=20")
    logits = run.model(run.normalize(uint8_nhwc_images.to(run.device)))              # as it was trained
"""
dependencies = ["torch", "torchvision", "hydra", "omegaconf", "numpy"]

from resnet_cifar.config import Shortcut  # noqa: E402
from resnet_cifar.models.resnet import cifar_plain as _cifar_plain  # noqa: E402
from resnet_cifar.models.resnet import cifar_resnet as _cifar_resnet  # noqa: E402
from resnet_cifar.saved_run import load_run  # noqa: E402


def cifar_resnet(depth: int = 20, shortcut: str = "A", num_classes: int = 10):
    """A freshly initialised CIFAR ResNet of He et al. 2015 (depth 6n+2, shortcut option A, B or C)."""
    return _cifar_resnet(depth, Shortcut(shortcut), num_classes)


def cifar_plain(depth: int = 20, num_classes: int = 10):
    """The plain counterpart (no shortcuts)."""
    return _cifar_plain(depth, num_classes)


def from_run(run_dir: str, device: str = "cpu", data_root: str | None = None, checkpoint: bool = False,
             trust_code: list[str] | str = (), max_parameters: int | None = None):
    """A trained run: .model (eval mode), .normalize (its input normalization), .config (typed) / .recorded (as
    summary.json holds it), .data. A net the folder names outside this package loads only from a module of
    trust_code (a run folder is data); one past max_parameters (default: trainer.max_parameters' own, never the
    folder's) is refused before it is built."""
    return load_run(run_dir, device, data_root, checkpoint, trust_code, max_parameters)
