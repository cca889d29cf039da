"""The Hydra config tree, installed as the package ``resnet_cifar.conf``.

It lives at the top level for readers; pyproject.toml maps it into the package
so that ``pkg://resnet_cifar.conf`` finds it after any kind of install.
"""
