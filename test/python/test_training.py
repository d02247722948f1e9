"""Training with attnc: a tiny transformer language model (2 layers, width
128, 4 causal heads) learns a copying task on the CPU once with attnc's
attention and once with the same attention written in plain PyTorch, from
the same weights on the same batches. The loss curves must agree within
float32 rounding at every logged step and fall far below the initial loss.
bench/train_tiny.py holds the model and the loop (and runs longer
comparisons); run pytest with -s to see the curves."""

import importlib.util
import math

import pytest

from conftest import ROOT, requires_compiler

torch = pytest.importorskip("torch")

pytestmark = requires_compiler

STEPS = 100
LOG_EVERY = 10
# |loss_attnc - loss_torch| <= AGREEMENT * loss_torch at each logged step.
AGREEMENT = 1e-3


def train_tiny():
    spec = importlib.util.spec_from_file_location(
        "train_tiny", ROOT / "bench" / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", ["softmax", "softplus"])
def test_training_matches_plain_pytorch(variant, one_torch_thread):
    bench = train_tiny()
    result = bench.compare(variant, steps=STEPS, batch=8, seq=32,
                           log_every=LOG_EVERY)
    print()
    bench.print_table([result])
    curve, peer = result["attnc"], result["peer_curve"]
    assert [step for step, _ in curve] == [step for step, _ in peer]
    for (step, ours), (_, theirs) in zip(curve, peer):
        assert math.isfinite(ours), (step, ours)
        assert abs(ours - theirs) <= AGREEMENT * theirs, (step, ours, theirs)
    initial, final = peer[0][1], peer[-1][1]
    # The first loss is about log(16) = 2.8; learning the copy takes it
    # below a tenth of that.
    assert initial > 2.0
    assert final < 0.1 * initial, (initial, final)
