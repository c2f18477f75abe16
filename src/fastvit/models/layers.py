"""FastViT building blocks.

Every block that has a train-time form and a fused inference form owns a
``reparameterize()`` method that rewrites it in place. A block built with
``inference_mode=True`` has the fused structure from the start, so a fused
state dict loads into it directly.

Parameter names follow the timm layout (``conv_kxk``, ``conv_scale``,
``identity``, ``reparam_conv``...), which makes timm checkpoints load without
renaming; :mod:`fastvit.checkpoints` translates the official release's names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.models.attention import Attention, LayerNorm2d

Tensor = torch.Tensor


class Reparameterizable:
    """Marker for blocks with a train-time and a fused form.

    ``reparameterize()`` must be idempotent and must leave the block in its fused
    form, computing from its own children (it never relies on them being fused).
    """

    def reparameterize(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def fuse_tree(module: nn.Module) -> None:
    """Reparameterize every block in ``module``'s tree, in place.

    A block folds its own children, so the walk stops descending at the first
    reparameterizable block of each branch; afterwards every module keeping an
    ``inference_mode`` flag (FastVit, its blocks) is marked fused.
    """
    def fuse(node: nn.Module) -> None:
        if isinstance(node, Reparameterizable):
            node.reparameterize()
            return
        for child in node.children():
            fuse(child)

    fuse(module)
    for m in module.modules():
        if isinstance(getattr(m, "inference_mode", None), bool):
            m.inference_mode = True


# ---------------------------------------------------------------------------
# Folding helpers: each returns a (weight, bias) pair of an equivalent conv.
# ---------------------------------------------------------------------------


def fold_bn(kernel: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a bias-free conv into the conv."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel_size: int, like: Tensor) -> Tensor:
    """A kxk grouped-conv kernel that maps its input to itself (needs in == out)."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, kernel_size, kernel_size,
                         dtype=like.dtype, device=like.device)
    centre = kernel_size // 2
    kernel[torch.arange(channels), torch.arange(channels) % in_per_group, centre, centre] = 1.0
    return kernel


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a square kernel to ``size`` x ``size`` (centred)."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def make_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
              bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups,
                     bias=bias)


def set_fused_conv(module: nn.Module, weight: Tensor, bias: Tensor, stride: int,
                   groups: int) -> None:
    """Install ``module.reparam_conv`` holding ``weight``/``bias``."""
    out_chs, in_per_group, k, _ = weight.shape
    conv = make_conv(in_per_group * groups, out_chs, k, stride, groups)
    conv.weight.data.copy_(weight.detach())
    conv.bias.data.copy_(bias.detach())
    module.reparam_conv = conv.to(weight.device)


# ---------------------------------------------------------------------------
# Small layers
# ---------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm: the unit every branch is made of."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = make_conv(in_chs, out_chs, kernel_size, stride, groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def fused(self) -> tuple[Tensor, Tensor]:
        return fold_bn(self.conv.weight, self.bn)


class LayerScale2d(nn.Module):
    """Per-channel learnable scale on NCHW tensors (``gamma`` has shape C x 1 x 1)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class SqueezeExcite(nn.Module):
    """Channel gating: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid.

    ``divisor`` rounds the reduced width to a multiple of it, as timm's SE does."""

    def __init__(self, channels: int, rd_ratio: float = 0.0625, divisor: int = 0) -> None:
        super().__init__()
        reduced = max(1, int(channels * rd_ratio))
        if divisor:
            reduced = max(divisor, int(channels * rd_ratio + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(F.relu(self.fc1(s)))
        return x * torch.sigmoid(s)


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---------------------------------------------------------------------------
# Reparameterizable blocks
# ---------------------------------------------------------------------------


class MobileOneBlock(nn.Module, Reparameterizable):
    """Sum of ``num_conv_branches`` kxk conv+BN branches, a 1x1 conv+BN "scale"
    branch (k > 1) and a BN-only identity branch (in == out, stride 1); then
    optional squeeze-excite and the activation. Fuses into one kxk conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, num_conv_branches: int = 1, use_scale_branch: bool = True,
                 use_se: bool = False, act: bool = True, inference_mode: bool = False) -> None:
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.se = SqueezeExcite(out_chs) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        if inference_mode:
            self.reparam_conv = make_conv(in_chs, out_chs, kernel_size, stride, groups)
            return
        self.reparam_conv = None
        has_identity = in_chs == out_chs and stride == 1
        self.identity = nn.BatchNorm2d(out_chs) if has_identity else None
        self.conv_kxk = nn.ModuleList(
            ConvBN(in_chs, out_chs, kernel_size, stride, groups) for _ in range(num_conv_branches)
        )
        has_scale = use_scale_branch and kernel_size > 1
        self.conv_scale = ConvBN(in_chs, out_chs, 1, stride, groups) if has_scale else None

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = 0
        if self.identity is not None:
            out = self.identity(x)
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        for branch in self.conv_kxk:
            out = out + branch(x)
        return self.act(self.se(out))

    def fused_weights(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the single conv equal to the sum of all branches."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        k = self.kernel_size
        ref = next(self.parameters())
        weight = torch.zeros(self.out_chs, self.in_chs // self.groups, k, k,
                             dtype=ref.dtype, device=ref.device)
        bias = torch.zeros(self.out_chs, dtype=ref.dtype, device=ref.device)
        if self.identity is not None:
            w, b = fold_bn(identity_kernel(self.in_chs, self.groups, k, ref), self.identity)
            weight, bias = weight + w, bias + b
        if self.conv_scale is not None:
            w, b = self.conv_scale.fused()
            weight, bias = weight + pad_kernel(w, k), bias + b
        for branch in self.conv_kxk:
            w, b = branch.fused()
            weight, bias = weight + w, bias + b
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        weight, bias = self.fused_weights()
        set_fused_conv(self, weight, bias, self.stride, self.groups)
        del self.identity, self.conv_kxk, self.conv_scale


class ReparamLargeKernelConv(nn.Module, Reparameterizable):
    """A large (7x7) grouped conv+BN with a parallel small (3x3) conv+BN branch,
    folded into the large kernel at inference (RepLKNet style), then optional
    squeeze-excite (MCi0-2) and activation, which stay after the fused conv.

    The paper's release computes an activation here and then discards it, so
    the step is linear; its pretrained weights depend on that. ``act=True`` gives
    the corrected (activated) behaviour, which the MCi towers are trained with.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 7, stride: int = 2,
                 groups: int = 1, small_kernel: int = 3, act: bool = False,
                 inference_mode: bool = False, use_se: bool = False) -> None:
        super().__init__()
        self.stride, self.groups, self.kernel_size = stride, groups, kernel_size
        self.se = SqueezeExcite(out_chs, 0.25, divisor=8) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        if inference_mode:
            self.reparam_conv = make_conv(in_chs, out_chs, kernel_size, stride, groups)
            return
        self.reparam_conv = None
        self.large_conv = ConvBN(in_chs, out_chs, kernel_size, stride, groups)
        self.small_conv = ConvBN(in_chs, out_chs, small_kernel, stride, groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        return self.act(self.se(self.large_conv(x) + self.small_conv(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w_large, b_large = self.large_conv.fused()
        w_small, b_small = self.small_conv.fused()
        weight = w_large + pad_kernel(w_small, self.kernel_size)
        set_fused_conv(self, weight, b_large + b_small, self.stride, self.groups)
        del self.large_conv, self.small_conv


class RepMixer(nn.Module, Reparameterizable):
    """Token mixer of stages 1-3: ``x + gamma * (DWConvBN(x) - BN(x))``.

    At inference the whole expression, skip connection included, is one 3x3
    depthwise conv with bias: the memory traffic of the skip disappears.
    """

    def __init__(self, dim: int, kernel_size: int = 3, layer_scale_init: float = 1e-5,
                 inference_mode: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        if inference_mode:
            self.reparam_conv = make_conv(dim, dim, kernel_size, 1, dim)
            return
        self.reparam_conv = None
        self.norm = MobileOneBlock(dim, dim, kernel_size, groups=dim, num_conv_branches=0,
                                   use_scale_branch=False, act=False)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, groups=dim, act=False)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w_mix, b_mix = self.mixer.fused_weights()
        w_norm, b_norm = self.norm.fused_weights()
        gamma = self.layer_scale.gamma
        eye = identity_kernel(self.dim, self.dim, self.kernel_size, w_mix)
        weight = eye + gamma.unsqueeze(-1) * (w_mix - w_norm)
        bias = gamma.flatten() * (b_mix - b_norm)
        set_fused_conv(self, weight, bias, 1, self.dim)
        del self.norm, self.mixer, self.layer_scale


class RepCPE(nn.Module, Reparameterizable):
    """Conditional positional encoding ``x + DWConv7x7(x)``; folds into one conv."""

    def __init__(self, dim: int, kernel_size: int = 7, inference_mode: bool = False) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        if inference_mode:
            self.reparam_conv = make_conv(dim, dim, kernel_size, 1, dim)
            return
        self.reparam_conv = None
        self.pos_enc = make_conv(dim, dim, kernel_size, 1, dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pos_enc(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        weight = self.pos_enc.weight + identity_kernel(self.dim, self.dim, self.kernel_size,
                                                       self.pos_enc.weight)
        set_fused_conv(self, weight, self.pos_enc.bias, 1, self.dim)
        del self.pos_enc


# ---------------------------------------------------------------------------
# FastViT blocks
# ---------------------------------------------------------------------------


class ConvMlp(nn.Module):
    """ConvFFN: 7x7 depthwise conv+BN, 1x1 expand, GELU, 1x1 project."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(self.conv(x))))
        return self.drop(self.fc2(x))


class RepMixerBlock(nn.Module):
    """Stages 1-3: RepMixer token mixing, then a layer-scaled ConvFFN residual."""

    def __init__(self, dim: int, mlp_ratio: float = 3.0, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-5, drop: float = 0.0,
                 inference_mode: bool = False) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, 3, layer_scale_init, inference_mode)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Module):
    """Attention stages: ``x + ls1 * MHSA(norm(x))`` then ``x + ls2 * ConvFFN(x)``;
    the norm is BatchNorm (the paper) or LayerNorm over channels (MCi3/4)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-5, drop: float = 0.0,
                 norm: str = "batchnorm") -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm == "batchnorm" else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = LayerScale2d(dim, layer_scale_init)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_2 = LayerScale2d(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path(self.layer_scale_2(self.mlp(x)))


class PatchEmbed(nn.Module):
    """Stride-2 downsampling between stages: large-kernel conv, then 1x1 MobileOne."""

    def __init__(self, in_chs: int, out_chs: int, lkc_act: bool = False,
                 inference_mode: bool = False, use_se: bool = False) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_chs, out_chs, 7, 2, groups=in_chs, act=lkc_act,
                                   inference_mode=inference_mode, use_se=use_se),
            MobileOneBlock(out_chs, out_chs, 1, inference_mode=inference_mode),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def make_stem(in_chs: int, out_chs: int, inference_mode: bool = False,
              scale_branch: bool = True) -> nn.Sequential:
    """Stride-4 stem: 3x3/2 conv, 3x3/2 depthwise conv, 1x1 conv (all MobileOne);
    ``scale_branch=False`` (MCi3/4) drops the 1x1 branches of the 3x3 blocks."""
    kw = dict(inference_mode=inference_mode, use_scale_branch=scale_branch)
    return nn.Sequential(
        MobileOneBlock(in_chs, out_chs, 3, 2, **kw),
        MobileOneBlock(out_chs, out_chs, 3, 2, groups=out_chs, **kw),
        MobileOneBlock(out_chs, out_chs, 1, **kw),
    )
