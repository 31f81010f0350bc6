"""Fake-quant inference with the packed runtime's float arithmetic, so that both give the same 8-bit codes.

A quantized Linear's 8-bit input codes are rounded from float values (LayerNorm, attention, GELU
outputs); a value that lands within a rounding error of a code boundary flips its code when the
two computations sum in different orders, and a flipped code moves every later layer a little
(on 6L W2A8 RTE, three dev rows near p = 0.5 changed class: -1.08 points). ``QuantLinear`` already
computes the runtime's exact integer products in no-grad eval; ``runtime_order_`` makes the other
float ops that feed a quantizer follow kernels/forward.c step by step:

- the embeddings sum ``(word + position) + token_type`` (Hugging Face adds the types first);
- LayerNorm: sums over 16 lanes (element i in lane i % 16, in order) then a fixed tree, squares
  with fused multiply-adds, ``fma((x - mean) * rstd, weight, bias)``;
- attention: each score a chain of fused multiply-adds over the head's features in order, then
  ``* scale + mask``; softmax with forward.c's exp polynomial and its lane sums; each output
  feature the fused multiply-add chains over the even and the odd keys, added;
- GELU with forward.c's erf polynomial (torch's own GELU differs from it in the last bit on most values);
- the Linears the runtime computes in float (ELECTRA's embeddings projection, which feeds a quantizer;
  the pooler and the classifier) as its lane_dot, with the weights the file stores.

A fused multiply-add is computed in float64 and rounded to float32: the product is exact, so it
differs from one rounding only when the float64 sum lands on a float32 tie (about 2^-29 of cases).
A float64 square root rounded to float32 is the correctly rounded float32 one (torch's float32 sqrt
is not always). tests/quant/test_runtime_order.py compiles forward.c's ops beside these and
compares them bit for bit; tests/test_engine.py compares whole models' logits on real rows.
Training, gradients, autocast and other dtypes keep torch's own ops (the hooks act in float32
no-grad eval passes only). Only the pooler's tanh is not repeated (libm's tanhf): it feeds no
quantizer, so it moves the logits by float rounding only (about 1e-7 of the largest). The cost:
float64 element-wise chains instead of torch's matmuls; `xtc eval` of the 6-layer MiniLM W2A8 RTE
folder (277 dev rows, one core) takes 90 s instead of 15 s in torch's order (its packed file: 3 s).
"""

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.activations import GELUActivation
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from xtc.arch import architecture
from xtc.quant.modules import Fp16LayerNorm, Fp16Linear, QuantLinear
from xtc.quant.primitives import round_fp16

RUNTIME_ATTENTION = "xtc_runtime_order"
LANES = 16
CHUNK = 1 << 21  # elements of the largest float64 temporary (16 MB): below glibc's mmap ceiling (32 MB), the
# allocator reuses its heap instead of mapping and zeroing fresh pages per op (2x the time, measured on RTE)


def _chunks(rows: int, per_row: int) -> list[slice]:
    step = max(1, CHUNK // max(per_row, 1))
    return [slice(i, i + step) for i in range(0, rows, step)]


def _inference(module: nn.Module) -> bool:
    """A no-grad eval pass in float32: the runtime's case (training, autocast and other dtypes keep torch's ops)."""
    return not module.training and not torch.is_grad_enabled() and \
        not any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda"))


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a * b + c with one rounding to float32 (broadcasting; the float64 product of two floats is exact)."""
    return (a.double() * b.double() + c.double()).float()


def _rsqrt(x: torch.Tensor) -> torch.Tensor:
    """1 / sqrtf(x) of float32 x, both correctly rounded (torch's float32 sqrt is not always: a float64
    square root rounded to float32 is)."""
    return torch.ones_like(x) / torch.sqrt(x.double()).float()


def _tree(acc: torch.Tensor) -> torch.Tensor:
    """forward.c's tree over the last dim (LANES): lanes l and l + w added, w = 8, 4, 2, 1."""
    acc = acc.clone()
    w = LANES // 2
    while w:
        acc[..., :w] = acc[..., :w] + acc[..., w:2 * w]
        w //= 2
    return acc[..., 0]


def _over_lanes(step, *xs: torch.Tensor) -> torch.Tensor:
    """acc[l] = step(acc[l], x[i], ...) for i = l, l + LANES, ... in order over the tensors' last dim (broadcast
    over the others): (..., n) -> (..., LANES)."""
    n = xs[0].shape[-1]
    shape = torch.broadcast_shapes(*(x.shape[:-1] for x in xs))
    acc = torch.zeros(*shape, LANES, dtype=torch.float32, device=xs[0].device)
    for i0 in range(0, n - n % LANES, LANES):
        acc = step(acc, *(x[..., i0:i0 + LANES] for x in xs))
    tail = n % LANES
    if tail:
        acc[..., :tail] = step(acc[..., :tail], *(x[..., n - tail:] for x in xs))
    return acc


def _f(c: float) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """forward.c's add_layer_norm_row over the last dim, in float32."""
    x = x.float()
    n = _f(x.shape[-1])
    mean = _tree(_over_lanes(lambda acc, v: acc + v, x)) / n
    d = x - mean.unsqueeze(-1)
    var = _tree(_over_lanes(lambda acc, v: fma(v, v, acc), d)) / n
    rstd = _rsqrt(var + _f(eps))
    return fma(d * rstd.unsqueeze(-1), weight.float(), bias.float())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """forward.c's float_linear_body: each output a lane_dot (fused multiply-adds over 16 lanes, then the
    tree) plus its bias. x (..., K), weight (N, K) -> (..., N), float32."""
    rows, w = x.reshape(-1, x.shape[-1]).float(), weight.float()
    out = [_tree(_over_lanes(lambda acc, a, b: fma(a, b, acc), rows[c].unsqueeze(1), w))  # (m, 1, K) x (N, K)
           for c in _chunks(len(rows), len(w) * LANES)]
    return (torch.cat(out) + (bias.float() if bias is not None else 0.0)).reshape(*x.shape[:-1], len(w))


def exp_poly(x: torch.Tensor) -> torch.Tensor:
    """forward.c's exp_poly: Cephes' expf after a Cody-Waite reduction, 0 below -87.33654, clamped at 88."""
    low = _f(-87.33654)
    under = x < low
    xc = torch.clamp(torch.maximum(x, low), max=88.0)
    magic = _f(12582912.0)
    n = (xc * _f(1.44269504088896341) + magic) - magic  # round half to even
    r = fma(n, _f(-0.693359375), xc)
    r = fma(n, _f(2.12194440e-4), r)
    p = torch.full_like(r, 1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = fma(p, r, _f(c))
    p = fma(p, r * r, r) + 1.0
    two_n = ((n.to(torch.int32) + 127) << 23).view(torch.float32)
    return torch.where(under, torch.zeros_like(p), p * two_n)


def erf(x: torch.Tensor) -> torch.Tensor:
    """forward.c's erf_as (Abramowitz & Stegun 7.1.26 with fused multiply-adds)."""
    t = 1.0 / fma(_f(0.3275911), x.abs(), _f(1.0))
    r = fma(_f(1.061405429), t, _f(-1.453152027))
    for c in (1.421413741, -0.284496736, 0.254829592):
        r = fma(r, t, _f(c))
    y = fma(-exp_poly(-(x * x)) * t, r, _f(1.0))
    return torch.copysign(y, x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """forward.c's gelu: x * 0.5 * (1 + erf(x / sqrt(2))), in float32."""
    x = x.float()
    return x * 0.5 * (1.0 + erf(x * _f(0.70710678118654752)))


def _runtime_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """forward.c's attend_body. query/key/value: (batch, heads, seq, head_dim) float32; attention_mask:
    additive (batch, 1, q|1, seq), 0 or the lowest float. Returns ((batch, seq, heads, head_dim), None)."""
    B, A, Tq, D = query.shape
    parts = [_attend(query[c], key[c], value[c], None if attention_mask is None else attention_mask[c])
             for c in _chunks(B, A * Tq * max(key.shape[-2], 2 * D))]  # scores (.., T), key pairs (2, .., D)
    return torch.cat(parts).transpose(1, 2).contiguous().to(query.dtype), None


def _attend(query, key, value, attention_mask):
    """_runtime_attention on some sequences: (b, heads, seq, head_dim) -> (b, heads, seq, head_dim) float32."""
    q, k, v = query.double(), key.double(), value.double()  # float32 values: products exact in float64
    D, T = q.shape[-1], k.shape[-2]
    acc = torch.zeros(*q.shape[:-1], T, dtype=torch.float32, device=q.device)  # (B, A, Tq, T)
    kt = k.transpose(-1, -2)  # (B, A, D, T)
    for d in range(D):
        acc = torch.addcmul(acc.double(), q[..., d:d + 1], kt[..., d:d + 1, :]).float()  # fma(q, k, acc)
    s = acc * _rsqrt(_f(D))
    if attention_mask is not None:
        s = s + attention_mask.float()
    e = exp_poly(s - s.amax(-1, keepdim=True))
    p = (e * (1.0 / _tree(_over_lanes(lambda a, x: a + x, e))).unsqueeze(-1)).double()  # padding keys weigh 0
    Dv = D // LANES * LANES  # features summed as even and odd keys, then added; the rest in one chain
    pairs = torch.zeros(2, *q.shape[:-1], Dv, dtype=torch.float32, device=q.device)  # (even, odd)
    rest = torch.zeros(*q.shape[:-1], D - Dv, dtype=torch.float32, device=q.device)
    for j in range(0, T, 2):
        n = min(2, T - j)  # keys j (even) and j + 1 (odd)
        w = p[..., j:j + n].movedim(-1, 0).unsqueeze(-1)  # (n, B, A, Tq, 1)
        pairs[:n] = torch.addcmul(pairs[:n].double(), w, v[..., j:j + n, :Dv].movedim(-2, 0).unsqueeze(-2)).float()
        for i in range(n if Dv < D else 0):
            rest = torch.addcmul(rest.double(), w[i], v[..., j + i, Dv:].unsqueeze(-2)).float()
    return torch.cat([pairs[0] + pairs[1], rest], -1)


AttentionInterface.register(RUNTIME_ATTENTION, _runtime_attention)
AttentionMaskInterface.register(RUNTIME_ATTENTION, eager_mask)  # additive masks: 0 or the lowest float


def _norm_hook(module: nn.LayerNorm, args, output):
    if not _inference(module) or output.dtype != torch.float32:
        return output
    weight, bias = module.weight, module.bias
    if isinstance(module, Fp16LayerNorm):
        weight, bias = round_fp16(weight), round_fp16(bias)
    return layer_norm(args[0], weight, bias, module.eps).to(output.dtype)


def _activation_hook(module: nn.Module, args, output):
    if not _inference(module) or output.dtype != torch.float32:
        return output
    x = args[0].reshape(-1, args[0].shape[-1])
    return torch.cat([gelu(x[c]) for c in _chunks(len(x), x.shape[-1])]).reshape(output.shape).to(output.dtype)


def _linear_hook(module: nn.Module, args, output):
    """A Linear the runtime computes in float (ELECTRA's embeddings projection, the pooler, the classifier),
    with the weights it stores: float16-rounded, or dequantized 8-bit rows."""
    if not _inference(module) or output.dtype != torch.float32:
        return output
    if isinstance(module, QuantLinear):
        weight, bias = module.quantized_weight(), module.kept_bias()
    elif isinstance(module, Fp16Linear):
        weight, bias = round_fp16(module.weight), None if module.bias is None else round_fp16(module.bias)
    else:
        weight, bias = module.weight, module.bias
    return linear(args[0], weight, bias)


def runs_packed(model: nn.Module) -> bool:
    """Whether the packed runtime runs ``model``'s quantized Linears: each with 8-bit inputs on the low-bit
    kernels, or weight-only (a float Linear there, e.g. the 8-bit pooler), and at least one of the first kind."""
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    return any(m.runs_packed() for m in linears) and all(m.runs_packed() or m.spec.act_bits is None for m in linears)


def runtime_order_(model: nn.Module) -> nn.Module:
    """Make a fake-quant model's no-grad eval compute its float ops as the packed runtime does (in place)."""
    arch = architecture(model.config.model_type)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.register_forward_hook(_norm_hook)
        elif isinstance(module, GELUActivation):  # the exact (erf) GELU: the runtime's only GELU
            module.register_forward_hook(_activation_hook)
    parts: dict[str, torch.Tensor] = {}

    def keep(name):  # the embeddings' parts of an inference pass, for their sum in the runtime's order
        def hook(module, args, output):
            if _inference(module):
                parts[name] = output
        return hook

    names = {"word": arch.word_embeddings, "position": arch.position_embeddings, "type": arch.token_type_embeddings}
    for part, name in names.items():
        if name is not None:
            model.get_submodule(name).register_forward_hook(keep(part))

    def embeddings_sum(module, args):
        if not _inference(module) or "word" not in parts:
            return None
        x = parts.pop("word") + parts.pop("position")
        if "type" in parts:
            x = x + parts.pop("type")
        return (x,)

    model.get_submodule(arch.embeddings_norm).register_forward_pre_hook(embeddings_sum)
    for name in (arch.embeddings_project, arch.pooler, arch.classifier):
        module = model.get_submodule(name) if name else None
        if module is not None and not (isinstance(module, QuantLinear) and module.runs_packed()):
            module.register_forward_hook(_linear_hook)
    trained_attention = model.config._attn_implementation

    def each_pass(module, *_):  # every pass picks its attention afresh: a failed pass leaves nothing behind
        parts.clear()
        runtime = _inference(module) and module.dtype == torch.float32
        module.set_attn_implementation(RUNTIME_ATTENTION if runtime else trained_attention)

    model.register_forward_pre_hook(each_pass)
    return model

