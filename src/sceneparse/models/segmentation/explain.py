"""The semantic models' explanation pictures: the lecture notes' figures of a segmentation network,
drawn from the model's own modules on one image.

Views (:meth:`SemanticSegmentor.explain <sceneparse.models.base.SceneModel.explain>`, ``what=``):

* ``probabilities``: the per-class probability maps ``softmax(logits)`` in the image's pixels --
  exactly the ``scores`` of ``predict(..., return_scores=True)`` -- one panel per class;
* ``aspp`` (DeepLabv3 / v3+): the ASPP branches one by one -- the 1x1 conv, the 3x3 atrous convs of
  rates ``r1 < r2 < r3`` and the image pooling -- each branch's output (channel mean) with the 9 taps
  its kernel reads around one unit, ``r`` cells apart; taps that fall off the map read zero padding;
* ``upsampling``: the ways back up side by side, on one of the network's own feature maps pooled 2x2:
  nearest-neighbour, bilinear, transposed convolution (the model's own where it has one that fits,
  else FCN's bilinear-initialised one) and max-unpooling with the pooling's indices (SegNet's own
  encoder pooling and decoder unpooling; for other models the indices of a 2x2 max-pool of that map).

Every number comes from one ``prepare -> forward`` pass (intermediate maps captured with forward hooks)
and the model's modules / :mod:`sceneparse.models.layers.upsampling` functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...structures.explain import BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap
from ..layers.upsampling import TransposedConv2d, interpolate, max_pool_with_indices, max_unpool

if TYPE_CHECKING:
    from .base import SemanticSegmentor

__all__ = ["SEMANTIC_OPTIONS", "aspp_of", "semantic_explanation", "semantic_views", "upsampling_operand"]

#: the keyword options of the semantic models' ``explain`` (see :func:`semantic_explanation`)
SEMANTIC_OPTIONS = ("imgsz", "at", "top_k")


def aspp_of(model: nn.Module) -> nn.Module | None:
    """The model's ASPP module (DeepLabv3: ``head.aspp``; DeepLabv3+: ``aspp``), else ``None``."""
    from .deeplab import ASPP

    for m in (getattr(model, "aspp", None), getattr(getattr(model, "head", None), "aspp", None)):
        if isinstance(m, ASPP):
            return m
    return None


def semantic_views(model: "SemanticSegmentor") -> tuple[str, ...]:
    """``probabilities``, ``aspp`` (models with an ASPP) and ``upsampling``."""
    return ("probabilities",) + (("aspp",) if aspp_of(model) is not None else ()) + ("upsampling",)


def _run(model: "SemanticSegmentor", image: Tensor, imgsz: Any, modules: dict[str, nn.Module]):
    """``prepare -> forward`` (eval) on one image, capturing the inputs and outputs of ``modules``."""
    batch, _ = model.prepare([image], imgsz=imgsz)
    seen: dict[str, tuple[Any, Any]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, (i, o))) for k, m in modules.items()]
    try:
        raw = model(batch)
    finally:
        for h in hooks:
            h.remove()
    return batch, raw, seen


def _frame(batch, image: Tensor) -> tuple[float, float, tuple[float, float, float, float]]:
    """``(sy, sx)`` and the extent of the padded batch tensor in the image's pixels."""
    sy, sx = (float(v) for v in batch.scales[0])
    H, W = batch.tensor.shape[-2:]
    return sy, sx, (0.0, 0.0, W / sx, H / sy)


def _name(model, c: int) -> str:
    names = tuple(model.class_names) if len(model.class_names) == model.num_classes else ()
    return names[c] if c < len(names) else f"class {c}"


def _probabilities(model, image: Tensor, imgsz: Any, top_k: int) -> Explanation:
    batch, raw, _ = _run(model, image, imgsz, {})
    result = model.postprocess(raw, batch, return_scores=True)[0]  # = predict(..., return_scores=True)
    scores = result.scores
    C = scores.shape[0]
    order = scores.flatten(1).mean(1).argsort(descending=True, stable=True)[: min(top_k, C)].tolist()
    panels = []
    for c in order:
        share = float((result.labels == c).float().mean())
        panels.append(Panel(image, f"P({_name(model, c)}): argmax on {100 * share:.0f}% of pixels",
                            overlay=ScalarMap(scores[c], scale=ColorScale(0.0, 1.0, "viridis", "probability"),
                                              alpha=0.8)))
    caption = (f"Per-class probability maps: the network scores every pixel for each of the {C} classes; a softmax "
               f"over the classes turns the scores into probabilities P(class | pixel) that sum to 1 at each pixel, "
               f"and the label map is their argmax. Shown: the {len(order)} classes with the highest mean probability "
               f"(of {C}), each on the same 0..1 scale, in the image's pixels (the logits, computed at the network's "
               f"input size, are resized bilinearly before the softmax -- predict's scores).")
    data = {"scores": scores, "labels": result.labels, "classes": order}
    return Explanation("semantic_probabilities", "Per-class probability maps", caption, tuple(panels), data)


def _aspp(model, image: Tensor, imgsz: Any, at: Any) -> Explanation:
    aspp = aspp_of(model)
    batch, raw, seen = _run(model, image, imgsz, {"aspp": aspp})
    (x,), y = seen["aspp"]
    branches = [("1x1 conv", aspp.conv1x1, 0)] + [(f"3x3 atrous, rate {conv.conv.dilation[0]}", conv,
                                                     int(conv.conv.dilation[0])) for conv in aspp.atrous] + \
        [("image pooling", aspp.image_pool, -1)]
    outs = [m(x) for _, m, _ in branches]  # the branches the ASPP concatenates, one by one
    sy, sx, ext = _frame(batch, image)
    H, W = batch.tensor.shape[-2:]
    h, w = x.shape[-2:]
    st_y, st_x = H / h, W / w
    if at is None:
        u, v = w // 2, h // 2
    else:
        t = torch.as_tensor(at, dtype=torch.float64).reshape(-1)
        if t.numel() != 2:
            raise ConfigError(f"at must be (x, y) in image pixels, got {at!r}")
        u = int(min(max(float(t[0]) * sx // st_x, 0), w - 1))
        v = int(min(max(float(t[1]) * sy // st_y, 0), h - 1))
    panels, taps_all, inside_all, means = [], [], [], []
    for (title, _, r), o in zip(branches, outs):
        m = o[0].mean(0)
        means.append(m)
        if r > 0:
            offs = [(dx * r, dy * r) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        elif r == 0:
            offs = [(0, 0)]
        else:
            offs = []
        taps = torch.tensor([(u + dx, v + dy) for dx, dy in offs], dtype=torch.int64).reshape(-1, 2)
        inside = (taps[:, 0] >= 0) & (taps[:, 0] < w) & (taps[:, 1] >= 0) & (taps[:, 1] < h)
        taps_all.append(taps)
        inside_all.append(inside)
        pts = tuple(PointMark(xy=((float(tx) + 0.5) * st_x / sx, (float(ty) + 0.5) * st_y / sy), radius=3.5,
                              color=(0, 255, 255) if ok else (255, 40, 40))
                    for (tx, ty), ok in zip(taps.tolist(), inside.tolist()))
        note = "" if r < 0 else f": {int(inside.sum())}/{len(offs)} taps on the map"
        if r < 0:  # the whole map
            boxes = (BoxMark(box=(0.0, 0.0, w * st_x / sx, h * st_y / sy), color=(0, 255, 255), width=2.0,
                             label="global average"),)
        else:
            boxes = ()
        panels.append(Panel(image, title + note, overlay=ScalarMap(m, extent=ext, alpha=0.75), points=pts, boxes=boxes))
    rates = [r for _, _, r in branches if r > 0]
    caption = (f"DeepLab's atrous spatial pyramid pooling looks at the stride-{st_x:g} feature map ({w}x{h} cells) at "
               f"several scales at once: a 1x1 conv, 3x3 convs with dilation (atrous) rates {', '.join(map(str, rates))} "
               f"-- the same 9 weights spread r cells apart, a (2r + 1)-cell window without more parameters or "
               f"computation -- and image pooling (global average, broadcast back). Each panel: one branch's output "
               f"(channel mean), with the taps its kernel reads for unit ({u}, {v}): cyan on the map, red where the "
               f"tap falls on zero padding. When the rate approaches the map's size most taps read padding and the "
               f"3x3 conv degenerates to its centre weight -- why DeepLabv3 adds the image-level branch. The five "
               f"outputs are concatenated and fused by a 1x1 conv.")
    data = {"branches": [t for t, _, _ in branches], "rates": rates, "outputs": outs, "means": means, "unit": (u, v),
            "taps": taps_all, "taps_inside": inside_all, "input": x, "output": y, "stride": (st_y, st_x)}
    return Explanation("semantic_aspp", "ASPP branches one by one", caption, tuple(panels), data)


def upsampling_operand(model: "SemanticSegmentor") -> tuple[str, nn.Module, str]:
    """Which of the model's maps the ``upsampling`` view pools and upsamples: ``(what, module, how)``
    -- the module whose output it is (captured with a hook), and ``how`` it is pooled: ``"segnet"``
    (SegNet's deepest encoder stage, pooled by SegNet's own indexed max-pool), ``"unet"`` (U-Net's
    deepest encoder level before its last pooling), ``"trunk"`` (the trunk's last map)."""
    from .segnet import SegNet
    from .unet import UNet

    if isinstance(model, SegNet):
        return "SegNet's deepest encoder stage", model.encoder[-1], "segnet"
    if isinstance(model, UNet) and len(model.encoder) >= 2:
        return "U-Net's deepest encoder level before its last pooling", model.encoder[-2], "unet"
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ConfigError(f"{type(model).__name__} has no map the upsampling view knows how to take")
    return "the trunk's last feature map", backbone, "trunk"


def _upsampling(model, image: Tensor, imgsz: Any) -> Explanation:
    what, module, how = upsampling_operand(model)
    batch, raw, seen = _run(model, image, imgsz, {"x": module})
    out = seen["x"][1]
    x = out[-1] if isinstance(out, (list, tuple)) else out
    pooled, idx = max_pool_with_indices(x, 2, ceil_mode=True)  # SegNet's own call (and U-Net's pool, with indices)
    if how == "unet":
        own = model.pool(x)
        if not torch.equal(own, pooled):
            raise AssertionError("U-Net's max-pool and the indexed max-pool disagree")
    size = tuple(x.shape[-2:])
    C = x.shape[1]
    nearest = interpolate(pooled, size=size, mode="nearest")
    bilinear = interpolate(pooled, size=size, mode="bilinear")
    unpooled = max_unpool(pooled, idx, size)
    conv = next((m for _, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d) and m.in_channels == C
                 and tuple(m.stride) == (2, 2)), None)
    own_conv = conv is not None
    if conv is None:  # FCN's upsampler, initialised to bilinear interpolation (deterministic)
        conv = TransposedConv2d.upsampling(C, 2).to(device=x.device, dtype=x.dtype)
    conv_name = next((n for n, m in model.named_modules() if m is conv), "") if own_conv else ""
    transposed = conv(pooled)[..., : size[0], : size[1]]
    c = int(x[0].abs().flatten(1).mean(1).argmax())  # the most active channel of the map
    tc = c if conv.out_channels == C and not own_conv else int(transposed[0].abs().flatten(1).mean(1).argmax())
    sy, sx, ext = _frame(batch, image)
    dark = (image * 0.3).clamp(0, 1)
    maps = [(f"input: {what.split(' ')[0]} map, channel {c} ({size[1]}x{size[0]})", x[0, c]),
            (f"2x2 max-pooled ({pooled.shape[-1]}x{pooled.shape[-2]})", pooled[0, c]),
            ("nearest neighbour", nearest[0, c]),
            ("bilinear", bilinear[0, c]),
            (f"transposed conv{' ' + conv_name if conv_name else ' (bilinear init)'}, ch {tc}", transposed[0, tc]),
            ("max-unpooling with the indices", unpooled[0, c])]
    lo = float(min(m.min() for _, m in maps))
    hi = float(max(m.max() for _, m in maps))
    scale = ColorScale(lo, max(hi, lo + 1e-6), "magma", "activation")
    panels = tuple(Panel(dark, t, overlay=ScalarMap(m, extent=ext, scale=scale, alpha=1.0, resample="nearest"))
                   for t, m in maps)  # cells drawn flat: the interpolation shown is the model's, not the renderer's
    tconv = (f"the model's own learnt up-convolution '{conv_name}' ({conv.kernel_size[0]}x{conv.kernel_size[1]}, "
             f"stride 2; it mixes channels, so its most active output channel {tc} is shown)" if own_conv else
             f"a {conv.kernel_size[0]}x{conv.kernel_size[1]} stride-2 transposed conv initialised to bilinear "
             f"interpolation, FCN's init (this model has no transposed conv of {C} channels)")
    caption = (f"Upsampling variants on {what} (channel {c}, its most active), max-pooled 2x2 and brought back to its "
               f"size: nearest neighbour copies each value into its 2x2 cell; bilinear interpolates between cell centres "
               f"(align_corners=False); transposed convolution adds a learnable filter per input value -- {tconv}; "
               f"max-unpooling puts each value back where the pooling found its maximum (the remembered indices) and "
               f"zeros elsewhere: sparse, but boundaries stay where they were (SegNet's decoder"
               f"{', this model' if how == 'segnet' else ''}). All panels share one colour scale; cells are drawn flat.")
    data = {"input": x, "pooled": pooled, "indices": idx, "nearest": nearest, "bilinear": bilinear,
            "transposed": transposed, "unpooled": unpooled, "channel": c, "transposed_channel": tc,
            "own_transposed": own_conv, "operand": how}
    return Explanation("semantic_upsampling", "Upsampling: nearest, bilinear, transposed conv, max-unpooling", caption,
                       panels, data)


def semantic_explanation(model: "SemanticSegmentor", view: str, image: Tensor, *, imgsz: Any = None, at: Any = None,
                         top_k: int | None = None) -> list[Explanation]:
    """The ``view`` picture (:func:`semantic_views`) of ``model`` on ``image`` (``float [3, H, W]`` in [0, 1]).
    ``imgsz``: as ``predict``; ``at``: ``(x, y)`` image pixels of the ASPP unit (default: the map's
    centre); ``top_k``: classes drawn by ``probabilities`` (default 6, highest mean probability first)."""
    if top_k is not None and int(top_k) < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if view == "probabilities":
        return [_probabilities(model, image, imgsz, int(top_k or 6))]
    if view == "aspp":
        return [_aspp(model, image, imgsz, at)]
    if view == "upsampling":
        return [_upsampling(model, image, imgsz)]
    raise ConfigError(f"unknown semantic view {view!r}")  # explain() checks the views first
