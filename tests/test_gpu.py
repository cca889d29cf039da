"""GPU only (skipped without CUDA): run on a lent device machine with `pytest tests/test_gpu.py -p no:xdist`.

The captured step (trainer.cuda_graph) must compute what the eager step computes, lr changes included,
and a GPU run records which GPU it used.
"""
import pytest
import torch
from conftest import TINY_BUDGET, composed_spec, train_in_process
from resnet_cifar.config import validate
from resnet_cifar.distributed import World, prepare_process
from resnet_cifar.loop import TrainingLoop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def loop_on_the_gpu(data_root, *overrides: str) -> TrainingLoop:
    cfg = composed_spec("depth=8", "data.batch_size=32", f"data.root={data_root}", "trainer.device=cuda",
                        *overrides).config
    validate(cfg)
    device, _ = prepare_process(cfg.trainer.device, cfg.trainer.threads, World())
    return TrainingLoop(cfg, device)


def test_the_captured_step_computes_what_the_eager_step_does(tiny_cifar10):
    eager = loop_on_the_gpu(tiny_cifar10, "trainer.cuda_graph=false")
    captured = loop_on_the_gpu(tiny_cifar10, "trainer.cuda_graph=true")
    assert eager.step.graph is None and captured.step.graph is not None
    for i in range(10):  # 3 eager warm-up steps, the capture, then replays; the lr changes after the capture
        lr = 0.1 if i < 6 else 0.01
        eager.train_one(lr)
        captured.train_one(lr)
    torch.cuda.synchronize()
    assert captured.step.graph.graph is not None  # it did capture
    for (name, a), b in zip(eager.model.state_dict().items(), captured.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    assert torch.allclose(eager.step.running_totals(), captured.step.running_totals(), rtol=1e-4)
    assert eager.evaluate_test() == pytest.approx(captured.evaluate_test(), rel=1e-4)


def test_another_optimizer_runs_the_same_step_eagerly_on_the_gpu(tiny_cifar10):
    """AdamW by _target_: no CUDA graph, no fused SGD lr tensor; its lr follows the schedule."""
    loop = loop_on_the_gpu(tiny_cifar10, "optimizer=adamw")
    assert loop.step.graph is None and loop.step.lr is None
    for lr in (0.001, 0.001, 0.0001):
        loop.train_one(lr)
    assert loop.step.optimizer.param_groups[0]["lr"] == 0.0001
    assert torch.isfinite(loop.step.running_totals()).all()


def test_a_gpu_run_records_the_gpu_it_used(tiny_cifar10, tmp_path):
    summary = train_in_process(*TINY_BUDGET, f"data.root={tiny_cifar10}", "trainer.device=cuda",
                               run_dir=tmp_path / "run")
    assert summary["status"] == "completed" and summary["device"].startswith("cuda:")
    assert summary["cuda_graph"] is True  # the default captures wherever it applies
    (uuid,) = summary["gpus"]
    assert uuid.startswith("GPU-") or uuid.startswith("MIG-")
