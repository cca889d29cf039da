import math

import pytest
import torch

from torch import nn

from conftest import composed_spec
from resnet_cifar.config import Shortcut
from resnet_cifar.errors import ConfigError
from resnet_cifar.models import build_model, count_parameters, response_layers
from resnet_cifar.models.preact import PreActBlock, PreActBottleneck, preact_resnet
from resnet_cifar.models.resnet import BasicBlock, ZeroPadIdentity, cifar_plain, cifar_resnet

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


@pytest.mark.parametrize("arch,shortcut", [("resnet", "A"), ("resnet", "B"), ("resnet", "C"), ("plain", "A"),
                                           ("preact", "A"), ("preact", "B"), ("preact", "C")])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_every_built_in_net_goes_through_the_arch_seam(arch, shortcut, num_classes):
    """conf/arch/NAME.yaml's _target_ called with depth, num_classes, shortcut (if it takes one), its keys."""
    model = build_model(composed_spec(f"arch={arch}", f"shortcut={shortcut}", "depth=20").config, num_classes)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)
    assert len(response_layers(model)) == 19  # the first layer and two 3x3 layers a block


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


# -- pre-activation ResNets (He et al. 2016) ---------------------------------------------------

def conv_and_classifier_weights(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


@pytest.mark.parametrize("depth,paper_millions,total", [(164, 1.7, 1_703_258), (1001, 10.2, 10_327_706)])
def test_bottleneck_preact_nets_have_the_papers_parameter_counts(depth, paper_millions, total):
    """Table 4 of the 2016 paper: ResNet-164 1.7M, ResNet-1001 10.2M (option B, as the authors' code). The
    paper's figures are the weights of the convolutions and the classifier (1.68M, 10.18M); with BN's
    scales and shifts the nets hold 1.70M and 10.33M."""
    model = preact_resnet(depth, 10, "B", bottleneck=True)
    assert round(conv_and_classifier_weights(model) / 1e6, 1) == paper_millions
    assert count_parameters(model) == total


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_basic_preact_nets_are_as_large_as_the_originals(depth):
    """Pre-activation moves BN and ReLU; with option A the count is the original's to the parameter."""
    assert count_parameters(preact_resnet(depth, 10, "A")) == PAPER_PARAMS[depth]


@pytest.mark.parametrize("depth,bottleneck,allowed", [(20, False, True), (164, False, True), (1001, False, False),
                                                       (164, True, True), (1001, True, True), (20, True, True),
                                                       (32, True, False), (21, False, False)])
def test_the_depth_rule_is_the_nets_own(depth, bottleneck, allowed):
    """6n+2 for basic units, 9n+2 for bottlenecks (some depths, like 164 and 20, are both)."""
    if allowed:
        preact_resnet(depth, 10, "A", bottleneck)
    else:
        with pytest.raises(ConfigError, match=r"depth=\d+ is not allowed: depth must be %dn\+2" % (9 if bottleneck else 6)):
            preact_resnet(depth, 10, "A", bottleneck)


@pytest.mark.parametrize("bottleneck", [False, True])
def test_a_preact_unit_adds_its_bn_relu_conv_branch_to_an_untouched_identity(bottleneck):
    """Full pre-activation (Fig. 4e): nothing follows the addition; the first unit of a stage activates
    before the split, the others leave the shortcut as it is."""
    torch.manual_seed(0)
    depth = 29 if bottleneck else 20
    model = preact_resnet(depth, 10, "B", bottleneck).eval()
    for m in model.modules():  # BN that is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    unit = model.layer2[1]
    assert isinstance(unit, PreActBottleneck if bottleneck else PreActBlock) and not unit.shared
    x = torch.randn(2, unit.bn1.num_features, 16, 16)
    with torch.no_grad():
        branch = unit.conv2(torch.relu(unit.bn2(unit.conv1(torch.relu(unit.bn1(x))))))
        if bottleneck:
            branch = unit.conv3(torch.relu(unit.bn3(branch)))
        assert torch.allclose(unit(x), x + branch, atol=1e-5)
        first = model.layer2[0]
        assert first.shared and isinstance(first.shortcut, nn.Conv2d)  # option B: a projection where it grows
        y = torch.randn(2, first.bn1.num_features, 32, 32)
        activated = torch.relu(first.bn1(y))
        branch = first.conv2(torch.relu(first.bn2(first.conv1(activated))))
        if bottleneck:
            branch = first.conv3(torch.relu(first.bn3(branch)))
        assert torch.allclose(first(y), branch + first.shortcut(activated), atol=1e-5)  # the shortcut's input:
        assert not torch.allclose(first(y), branch + first.shortcut(y), atol=1e-3)     # activated, not raw
    states = set(model.state_dict())
    assert {"conv1.weight", "bn.weight", "fc.weight"} <= states and "bn1.weight" not in states  # no BN after conv1


def test_a_basic_preact_164_says_it_is_not_the_papers_bottleneck_net(caplog):
    preact_resnet(164, 10, "A")
    assert "the 2016 paper's ResNet-164 is a bottleneck net (arch.bottleneck=true shortcut=B)" in caplog.text
    caplog.clear()
    preact_resnet(110, 10, "A")
    assert caplog.text == ""


def test_preact_responses_are_its_3x3_convs_in_forward_order():
    model = preact_resnet(164, 10, "B", bottleneck=True)
    layers = response_layers(model)
    assert len(layers) == 1 + 3 * 18 and all(m.kernel_size == (3, 3) for m in layers)
    assert layers[0] is model.conv1 and layers[1] is model.layer1[0].conv2 and layers[-1] is model.layer3[-1].conv2
