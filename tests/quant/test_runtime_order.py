"""runtime_order_: each emulated op gives forward.c's bits, and only no-grad inference changes (training and
gradients are torch's own, bit for bit)."""

import copy
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import xtc.kernels

from xtc.data.tasks import get_task
from xtc.models import load_model, load_tokenizer
from xtc.quant.apply import quantize_
from xtc.quant.runtime_order import (_runtime_attention, exp_poly, gelu, layer_norm, linear, runs_packed,
                                     runtime_order_)


def test_training_forward_and_gradients_are_unchanged_and_inference_moves_by_rounding_only():
    torch.manual_seed(0)
    model, _ = load_model("bert-tiny", get_task("MRPC"))
    plain = quantize_(model, "w1a8")
    ordered = runtime_order_(copy.deepcopy(plain))
    batch = load_tokenizer("bert-tiny")(["A man is playing a guitar.", "Cats sleep."],
                                        ["Someone plays music.", "The market fell."], padding=True, return_tensors="pt")
    for m in (plain, ordered):
        m.eval()  # no dropout, but gradients on: the hooks stay off
    a, b = plain(**batch).logits, ordered(**batch).logits
    assert torch.equal(a, b)
    a.sum().backward(), b.sum().backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(plain.parameters(), ordered.parameters()))
    with torch.no_grad():  # inference: the runtime's float order, the same function up to rounding
        a, b = plain(**batch).logits, ordered(**batch).logits
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=1e-2 * a.abs().max().item())
    a, b = plain(**batch).logits, ordered(**batch).logits  # gradients on again: torch's ops again
    assert torch.equal(a, b)
    assert runs_packed(plain) and not runs_packed(model.__class__(model.config))


KERNELS = Path(xtc.kernels.__file__).parent


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """forward.c's float ops in a library of their own, compiled as setup.py compiles the kernels."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not (KERNELS / "forward.c").is_file():
        pytest.skip("needs a C compiler and the kernels' sources")
    lib = tmp_path_factory.mktemp("ops") / "ops.so"
    subprocess.run([compiler, "-O3", "-std=c11", "-fno-trapping-math", "-ffp-contract=off", "-Wno-psabi", "-shared",
                    "-fPIC", f"-I{KERNELS}", "-o", str(lib), str(Path(__file__).parent / "runtime_order_ops.c"),
                    str(KERNELS / "gemm.c"), str(KERNELS / "threads.c"), "-lm", "-ldl", "-pthread"], check=True)
    return ctypes.CDLL(str(lib))


def _p(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.mark.parametrize("H", [384, 200])  # 200: a tail after the 16-lane blocks
def test_layer_norm_and_linear_give_the_kernels_bits(ops, H):
    rng = np.random.default_rng(H)
    x = (rng.standard_normal((500, H)) * rng.uniform(0.1, 30, (500, 1))).astype(np.float32)
    w, b = rng.standard_normal(H).astype(np.float32), rng.standard_normal(H).astype(np.float32)
    got = x.copy()
    ops.t_layer_norm(_p(got), _p(w), _p(b), ctypes.c_int64(500), ctypes.c_int64(H), ctypes.c_float(1e-12))
    assert np.array_equal(got, layer_norm(*map(torch.from_numpy, (x, w, b)), 1e-12).numpy())
    weight = rng.standard_normal((7, H)).astype(np.float32)
    got = np.zeros((500, 7), np.float32)
    ops.t_linear(_p(x), _p(weight), _p(b[:7].copy()), *map(ctypes.c_int64, (500, 7, H)), _p(got))
    assert np.array_equal(got, linear(*map(torch.from_numpy, (x, weight, b[:7].copy()))).numpy())


def test_exp_and_gelu_give_the_kernels_bits(ops):
    rng = np.random.default_rng(0)
    for name, emulated, values in (("t_exp", exp_poly, rng.uniform(-100, 10, 200_000)),
                                   ("t_gelu", gelu, rng.standard_normal(200_000) * 4)):
        values = values.astype(np.float32)
        got = values.copy()
        getattr(ops, name)(_p(got), ctypes.c_int64(got.size))
        assert np.array_equal(got, emulated(torch.from_numpy(values)).numpy()), name


@pytest.mark.parametrize("D", [8, 40, 64])  # 40: 32 features as even/odd key sums, 8 in one chain
@pytest.mark.parametrize("T", [1, 16, 37])
def test_attention_gives_the_kernels_bits(ops, D, T):
    B, A = 3, 3
    H = A * D
    rng = np.random.default_rng(D * 100 + T)
    qkv = (rng.standard_normal((B, T, 3 * H)) * 3).astype(np.float32)
    mask = np.ones((B, T), np.int64)
    mask[1, T * 3 // 4 + 1:] = mask[2, 1:] = 0
    ctx = np.zeros((B, T, H), np.float32)
    ops.t_attention(_p(qkv), _p(mask), *map(ctypes.c_int64, (B, T, H, A)), _p(ctx))
    q, k, v = (torch.from_numpy(qkv[..., i * H:(i + 1) * H]).view(B, T, A, D).transpose(1, 2) for i in range(3))
    additive = torch.where(torch.from_numpy(mask)[:, None, None, :] > 0, 0.0, torch.finfo(torch.float32).min)
    emulated = _runtime_attention(None, q, k, v, additive)[0].reshape(B, T, H).numpy()
    assert np.array_equal(ctx[mask > 0], emulated[mask > 0])
