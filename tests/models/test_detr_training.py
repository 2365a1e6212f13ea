"""DETR training: the Hungarian match (against brute force), the set loss (against Hugging Face's
DETR loss on shared weights, and its properties), the one-to-many option, and a few optimisation
steps of the small DETR lowering the loss."""
from __future__ import annotations

import itertools

import pytest
import torch

from sceneparse.errors import DataError
from sceneparse.models import zoo
from sceneparse.ops.boxes import generalized_box_iou
from sceneparse.ops.set_matching import (cxcywh_to_xyxy, hungarian_match, one_to_many_targets, set_matching_cost,
                                         xyxy_to_cxcywh)
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

TINY = dict(num_classes=3, dim=32, heads=4, ffn_dim=64, encoder_layers=2, decoder_layers=3, num_queries=8,
            min_size=64, max_size=96, dropout=0.0)


def _boxes(n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random cxcywh boxes inside [0, 1]."""
    wh = torch.rand(n, 2, generator=g) * 0.4 + 0.05
    c = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
    return torch.cat([c, wh], 1)


def test_matching_cost_formula_and_hungarian_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    boxes = _boxes(10, g).view(2, 5, 4).double()
    gt_labels = [torch.tensor([2, 0, 1]), torch.tensor([1, 1])]
    gt_boxes = [_boxes(3, g).double(), _boxes(2, g).double()]
    for b in range(2):
        cost = set_matching_cost(logits[b], boxes[b], gt_labels[b], gt_boxes[b])
        for i in range(5):  # the paper's formula, one pair at a time
            for j in range(len(gt_labels[b])):
                p = logits[b, i].softmax(-1)[gt_labels[b][j]]
                l1 = (boxes[b, i] - gt_boxes[b][j]).abs().sum()
                giou = generalized_box_iou(cxcywh_to_xyxy(boxes[b, i])[None], cxcywh_to_xyxy(gt_boxes[b][j])[None])[0, 0]
                assert abs(float(cost[i, j]) - float(-p + 5 * l1 - 2 * giou)) < 1e-5
    matches = hungarian_match(logits, boxes, gt_labels, gt_boxes)
    for b, (pi, gi) in enumerate(matches):
        cost = set_matching_cost(logits[b], boxes[b], gt_labels[b], gt_boxes[b])
        m = len(gt_labels[b])
        best = min(sum(float(cost[p, j]) for j, p in enumerate(perm)) for perm in itertools.permutations(range(5), m))
        assert len(pi) == m and abs(float(cost[pi, gi].sum()) - best) < 1e-5  # float32 costs
        assert torch.equal(pi, pi.sort().values)
    empty = hungarian_match(logits, boxes, [torch.zeros(0, dtype=torch.int64)] * 2, [torch.zeros(0, 4)] * 2)
    assert all(len(p) == 0 and len(q) == 0 for p, q in empty)
    labels, rep = one_to_many_targets(gt_labels[0], gt_boxes[0], 3)
    assert labels.tolist() == [2, 0, 1] * 3 and torch.equal(rep[3:6], gt_boxes[0])
    xyxy = cxcywh_to_xyxy(gt_boxes[0])
    assert torch.allclose(xyxy_to_cxcywh(xyxy), gt_boxes[0])


def _targets(model, images, seed=0, counts=(3, 2)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (im, n) in enumerate(zip(images, counts)):
        h, w = im.shape[-2:]
        b = cxcywh_to_xyxy(_boxes(n, g)) * torch.tensor([w, h, w, h])
        out.append(Target(i, Instances((h, w), boxes=b, labels=torch.randint(0, model.num_classes, (n,), generator=g))))
    return out


def test_set_loss_equals_the_reference_loss():
    """HF's DETR loss (matcher + CE with eos 0.1 + 5 L1 + 2 GIoU, auxiliary losses) on shared random
    weights equals ours, per term and in total."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DetrConfig(use_pretrained_backbone=False, backbone="resnet18", dropout=0.0, d_model=32, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                                  decoder_attention_heads=4, num_queries=8, num_labels=3, auxiliary_loss=True)
    hf = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():
        hf.class_labels_classifier.weight.mul_(10)
        hf.bbox_predictor.layers[-1].weight.mul_(10)
        hf.model.query_position_embeddings.weight.normal_()
    model = zoo.build("detr_resnet18", weights=hf.state_dict(), norm="frozen_bn", **TINY).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 70, 90, generator=g), torch.rand(3, 80, 60, generator=g)]
    batch, targets = model.prepare(images, _targets(model, images))
    raw = model(batch)
    ours = {k: v.detach() for k, v in model.loss(raw, targets).items()}
    labels = [{"class_labels": t.instances.labels,
               "boxes": xyxy_to_cxcywh(t.instances.boxes / torch.tensor([s[1], s[0], s[1], s[0]]))}
              for t, s in zip(targets, batch.image_sizes)]
    ref = hf(pixel_values=batch.tensor, pixel_mask=model.valid_mask(batch).long(), labels=labels)
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert len(ours) == 9
    for k, v in ours.items():
        w = weights[k.rstrip("_0123456789")] if k[-1].isdigit() else weights[k]
        assert abs(float(v) - w * float(ref.loss_dict[k])) < 1e-5, k
    assert abs(float(sum(ours.values())) - float(ref.loss)) < 1e-4


def test_loss_properties_and_bad_targets():
    model = zoo.build("detr_resnet18", **TINY).train()
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 64, generator=g)]
    empty = [Target(i, Instances(tuple(im.shape[-2:]), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)))
             for i, im in enumerate(images)]
    losses = model.training_losses(images, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_ce"]) > 0 and float(losses["loss_bbox"]) == 0 and float(losses["loss_giou"]) == 0
    sum(losses.values()).backward()  # an image without objects still trains "no object"
    one = _targets(model, images, counts=(1, 0))
    losses = model.training_losses(images, one)
    assert all(float(losses[k]) > 0 for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_giou_1"))
    crowd = _targets(model, images, counts=(2, 1))
    crowd[0].iscrowd = torch.tensor([True, False])  # crowd objects are not matched
    assert torch.isfinite(sum(model.training_losses(images, crowd).values()))
    bad = _targets(model, images)
    bad[1].instances.boxes[1, 2] = bad[1].instances.boxes[1, 0]
    with pytest.raises(DataError, match=r"boxes\[1\].*positive width"):
        model.training_losses(images, bad)
    bad = _targets(model, images)
    bad[0].instances.labels[0] = 7
    with pytest.raises(DataError, match="labels must lie in 0..2"):
        model.training_losses(images, bad)


def test_one_to_many_queries_do_not_change_the_main_queries():
    """The one-to-many group is masked out of the main queries' self-attention: the main queries'
    outputs equal those of the same model without the group; its losses are added in training and it
    is not run at inference."""
    torch.manual_seed(0)
    hybrid = zoo.build("detr_resnet18", one_to_many_queries=16, one_to_many_k=2, **TINY).train()
    plain = zoo.build("detr_resnet18", **TINY).train()
    plain.load_state_dict({k: v for k, v in hybrid.state_dict().items() if "o2m" not in k})
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 64, generator=g)]
    batch, targets = hybrid.prepare(images, _targets(hybrid, images))
    hybrid.backbone.eval(), plain.backbone.eval()  # same BatchNorm statistics in both runs
    raw_h, raw_p = hybrid(batch), plain(batch)
    assert raw_h.o2m_logits.shape[2] == 16
    assert torch.allclose(raw_h.logits, raw_p.logits, atol=1e-5)
    assert torch.allclose(raw_h.boxes, raw_p.boxes, atol=1e-6)
    losses = hybrid.loss(raw_h, targets)
    assert {"o2m_loss_ce", "o2m_loss_bbox", "o2m_loss_giou", "o2m_loss_ce_0"} <= set(losses)
    hybrid.eval()
    assert hybrid(batch).o2m_logits is None


def test_small_detr_set_loss_drops_on_a_tiny_batch():
    """A few AdamW steps (lr 1e-4 as DETR) on two synthetic images: the total set loss falls."""
    torch.manual_seed(0)
    model = zoo.build("detr_resnet18", **TINY).train()
    g = torch.Generator().manual_seed(4)
    images, targets = [], []
    for i, (h, w) in enumerate([(64, 80), (72, 64)]):
        image = torch.full((3, h, w), 0.2)
        b = torch.tensor([[8.0, 10.0, 40.0, 44.0]]) + i * 6
        image[:, 10 + i * 6:44 + i * 6, 8 + i * 6:40 + i * 6] = torch.rand(3, 1, 1, generator=g)
        images.append(image)
        targets.append(Target(i, Instances((h, w), boxes=b, labels=torch.tensor([i + 1]))))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    history = []
    for _ in range(12):
        loss = sum(model.training_losses(images, targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        history.append(float(loss))
    assert history[-1] < 0.8 * history[0], history


def test_export_graph_resize_and_outputs_equal_eager():
    """The traceable resize (two MatMuls) equals antialiased F.interpolate when shrinking and
    enlarging; the export graph run eagerly gives predict's detections, best first."""
    from sceneparse.models.detr.detr import antialiased_resize

    g = torch.Generator().manual_seed(5)
    for hw, out in [((37, 53), (80, 101)), ((120, 160), (50, 66))]:
        x = torch.rand(1, 3, *hw, generator=g)
        ref = torch.nn.functional.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=True)
        assert (antialiased_resize(x, out) - ref).abs().max() < 1e-4
    model = zoo.build("detr_resnet18", **TINY).eval()
    image = torch.rand(3, 50, 70, generator=g)
    graph = model.export_graph().eval()
    with torch.no_grad():
        boxes, scores, labels = graph(image)
    det = model.predict([image], conf=0.0)[0]
    order = det.scores.argsort(descending=True)
    assert torch.allclose(scores, det.scores[order]) and torch.equal(labels, det.labels[order])
    assert torch.allclose(boxes, det.boxes[order], atol=1e-4)
