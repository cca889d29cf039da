"""The Hydra config tree, installed as the package ``resnet_cifar.conf``.

It lives at the top level for readers; pyproject.toml maps it into the package
so that ``pkg://resnet_cifar.conf`` finds it after any kind of install.
Importing it (Hydra does, to read it) registers the typed schema that
config.yaml extends, so every way of composing it gets the same checks.
"""
import resnet_cifar.config  # noqa: F401
