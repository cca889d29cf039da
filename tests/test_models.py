import math

import pytest
import torch

from resnet_cifar.config import Arch, Shortcut
from resnet_cifar.errors import ConfigError
from resnet_cifar.models import (
    BasicBlock, ZeroPadIdentity, build_model, cifar_plain, cifar_resnet, count_parameters,
)

# He et al. 2015, Table 6 / REFERENCE.md: exact counts with option A, 10 classes.
PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_option_a_parameter_counts_equal_the_paper(depth):
    assert count_parameters(cifar_resnet(depth, Shortcut.A)) == PAPER_PARAMS[depth]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_net_has_the_parameters_of_its_option_a_resnet(depth):
    assert count_parameters(cifar_plain(depth)) == PAPER_PARAMS[depth]


def projection_params(cin: int, cout: int) -> int:
    return cin * cout + 2 * cout  # 1x1 conv without bias + BN weight and bias


@pytest.mark.parametrize("depth", [20, 56])
def test_option_b_and_c_add_exactly_their_projections(depth):
    n = (depth - 2) // 6
    growing = projection_params(16, 32) + projection_params(32, 64)
    every = (n * projection_params(16, 16) + growing
             + (n - 1) * (projection_params(32, 32) + projection_params(64, 64)))
    assert count_parameters(cifar_resnet(depth, Shortcut.B)) == PAPER_PARAMS[depth] + growing
    assert count_parameters(cifar_resnet(depth, Shortcut.C)) == PAPER_PARAMS[depth] + every


@pytest.mark.parametrize("arch,shortcut", [(Arch.resnet, Shortcut.A), (Arch.resnet, Shortcut.B),
                                           (Arch.resnet, Shortcut.C), (Arch.plain, Shortcut.A)])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shape(arch, shortcut, num_classes):
    model = build_model(arch, 20, shortcut, num_classes)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)


def test_stage_shapes_follow_the_paper():
    model = cifar_resnet(20).eval()
    x = model.relu(model.bn1(model.conv1(torch.randn(1, 3, 32, 32))))
    shapes = []
    for layer in (model.layer1, model.layer2, model.layer3):
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3


def test_plain_blocks_have_no_shortcut_and_resnet_blocks_do():
    plain = [m for m in cifar_plain(20).modules() if isinstance(m, BasicBlock)]
    resnet = [m for m in cifar_resnet(20).modules() if isinstance(m, BasicBlock)]
    assert len(plain) == len(resnet) == 9
    assert all(b.shortcut is None for b in plain)
    assert all(b.shortcut is not None for b in resnet)
    # the same weights give different outputs once shortcuts are added
    p, r = cifar_plain(20).eval(), cifar_resnet(20).eval()
    r.load_state_dict(p.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(p(x), r(x))


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 32, 32)
    out = ZeroPadIdentity(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


def test_state_dict_keys_are_stable():
    keys = set(cifar_resnet(20, Shortcut.B).state_dict())
    assert {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.2.bn2.running_var",
            "layer2.0.shortcut.0.weight", "fc.weight", "fc.bias"} <= keys


def test_he_initialization_of_convolutions():
    torch.manual_seed(0)
    conv = cifar_resnet(20).layer3[1].conv1  # 64 -> 64, 3x3: fan_out 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.03)
    bn = cifar_resnet(20).layer3[1].bn1
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))


@pytest.mark.parametrize("depth", [21, 2, 0, 19])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ConfigError, match=r"6n\+2"):
        cifar_resnet(depth)
