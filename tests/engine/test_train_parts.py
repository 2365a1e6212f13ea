"""Pieces of the trainer with exact numbers: data order, parameter groups, the time-budget plan and
the re-anchored cosine, results.csv, and what a model's task / metric are."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from sceneparse.config import OptimConfig
from sceneparse.engine.budget import TimePlan, must_stop, plan_time_budget
from sceneparse.engine.data_order import epoch_batches, epoch_order, iters_per_epoch, sample_seed
from sceneparse.engine.optim import build_optimizer, param_groups
from sceneparse.engine.run_log import csv_columns, plot_loss_curve, plot_metrics, write_results_csv
from sceneparse.engine.schedule import lr_factor
from sceneparse.models.base import model_info
from sceneparse.errors import ConfigError


# ---- data order ----------------------------------------------------------------------------------
def test_epoch_order_is_a_fixed_function_of_seed_and_epoch():
    # golden values: changing the seeding would silently break resuming older runs
    assert epoch_order(8, seed=0, epoch=0).tolist() == [0, 2, 6, 3, 1, 5, 7, 4]
    assert epoch_order(8, seed=0, epoch=1).tolist() == [0, 4, 3, 7, 2, 5, 6, 1]
    assert sample_seed(0, 0, 0) == 4268044569589673107
    a, b, c = epoch_order(10, 0, 0), epoch_order(10, 0, 1), epoch_order(10, 1, 0)
    assert sorted(a.tolist()) == list(range(10))
    assert a.tolist() != b.tolist() and a.tolist() != c.tolist()
    state = torch.get_rng_state()
    epoch_order(10, 0, 0)
    assert torch.equal(state, torch.get_rng_state())  # never touches the global stream
    assert sample_seed(0, 0, 1) != sample_seed(0, 0, 2) != sample_seed(0, 1, 1)


def test_epoch_batches_wrap_around_and_split_the_global_batch_over_ranks():
    n, gb = 10, 4
    assert iters_per_epoch(n, gb) == 3
    one = epoch_batches(n, gb, seed=3, epoch=2)
    assert [len(b) for b in one] == [4, 4, 4]
    order = epoch_order(n, 3, 2).tolist()
    assert [k[2] for b in one for k in b] == order + order[:2]  # padded by wrapping around
    assert [k[1] for b in one for k in b] == list(range(12))  # positions
    assert all(k[0] == 2 for b in one for k in b)
    r0 = epoch_batches(n, gb, seed=3, epoch=2, rank=0, world_size=2)
    r1 = epoch_batches(n, gb, seed=3, epoch=2, rank=1, world_size=2)
    assert [x + y for x, y in zip(r0, r1)] == one  # rank 0 takes the first half of each global batch
    assert epoch_batches(n, gb, seed=3, epoch=2, start=1) == one[1:]  # resume inside the epoch
    assert epoch_batches(n, gb, seed=3, epoch=2, start=1, stop=2) == one[1:2]
    with pytest.raises(ValueError, match="not divisible"):
        epoch_batches(n, 3, seed=0, epoch=0, world_size=2)
    assert len(epoch_batches(3, 8, seed=0, epoch=0)[0]) == 8  # fewer images than one batch


# ---- parameter groups ---------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.gn = nn.GroupNorm(1, 2)
        self.fc = nn.Linear(2, 1)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.fc  # the same parameters reachable twice


def test_no_weight_decay_on_norm_layers_and_biases():
    m = _Tiny()
    groups = param_groups(m, 0.5)
    names = {id(p): n for n, p in m.named_parameters()}
    assert [names[id(p)] for p in groups[0]["params"]] == ["conv.weight", "fc.weight"]
    assert [names[id(p)] for p in groups[1]["params"]] == ["conv.bias", "bn.weight", "bn.bias", "gn.weight",
                                                          "gn.bias", "fc.bias"]
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.5, 0.0)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_reaches_only_the_decay_group(name):
    torch.manual_seed(0)
    m = _Tiny()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = build_optimizer(m, OptimConfig(name=name, lr=0.1, weight_decay=0.5, momentum=0.9))
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(m.named_parameters())
    # zero gradients: SGD decays w -> w (1 - lr wd); AdamW decouples: w -> w (1 - lr wd) as well
    for n in ("conv.weight", "fc.weight"):
        assert torch.allclose(after[n], before[n] * (1 - 0.1 * 0.5), atol=1e-7), n
    for n in ("conv.bias", "bn.weight", "bn.bias", "gn.weight", "fc.bias"):
        assert torch.equal(after[n], before[n]), n
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        build_optimizer(m, OptimConfig(name="lion"))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_step_is_the_per_tensor_loops_arithmetic(name):
    """The optimizer is torch's fused implementation on the CPU, and five steps of it land where five
    steps of the reference per-tensor loop (same groups and hyper-parameters) land."""
    torch.manual_seed(0)
    a = _Tiny()
    b = _Tiny()
    b.load_state_dict(a.state_dict())
    cfg = OptimConfig(name=name, lr=0.05, weight_decay=0.1, momentum=0.9)
    fused = build_optimizer(a, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    cls = torch.optim.SGD if name == "sgd" else torch.optim.AdamW
    extra = {"momentum": 0.9} if name == "sgd" else {"betas": (0.9, 0.999)}
    loop = cls([{**g, "params": [dict(b.named_parameters())[n] for n in _names(a, g["params"])]}
                for g in param_groups(a, 0.1)], lr=0.05, foreach=False, **extra)
    start = {n: p.detach().clone() for n, p in a.named_parameters()}
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        for pa, pb in zip(a.parameters(), b.parameters()):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        fused.step()
        loop.step()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-6, msg=n)
        moved = (pa - start[n]).abs().max() > 1e-3
        assert moved == pa.requires_grad, n  # the steps moved every trainable parameter, and only those


def _names(model, params):
    ids = {id(p): n for n, p in model.named_parameters()}
    return [ids[id(p)] for p in params]


# ---- time budget ---------------------------------------------------------------------------------
def test_plan_fills_the_budget_with_whole_epochs_and_a_cut_last_one():
    # 2 s/iteration, 4 iterations per epoch, 8 s spent on 4 iterations; evaluation 3 s every epoch,
    # save 1 s: E epochs cost (4E - 4) * 2 + 3E + E <= 52  ->  E <= 60/12 = 5
    p = plan_time_budget(60, spent_s=8, epoch=0, done_iters=4, sec_per_iter=2, eval_s=3, save_s=1,
                         iters_per_epoch=4, eval_every=1)
    assert p == TimePlan(5, 20)
    # (a 6th epoch cut short would pay 6 evaluations and saves: 52 - 24 = 28 s = 14 iterations,
    # 18 in all, fewer than the 5 whole epochs' 20: no cut epoch)
    # evaluation every 2nd epoch (+ the final one): E = 6 costs 40 + 3 * 3 + 6 = 55 > 52; E = 5: 32 + 9 + 5 = 46;
    # a cut 6th epoch: 52 - 3 * 3 - 6 = 37 s -> 18 iterations after the 4 done -> 22
    assert plan_time_budget(60, spent_s=8, epoch=0, done_iters=4, sec_per_iter=2, eval_s=3, save_s=1,
                            iters_per_epoch=4, eval_every=2) == TimePlan(6, 22)
    # no evaluation: (4E - 4) * 2 + E <= 52 -> E = 6 whole; a cut 7th: 52 - 7 = 45 s -> 22 iterations -> 26
    assert plan_time_budget(60, spent_s=8, epoch=0, done_iters=4, sec_per_iter=2, eval_s=3, save_s=1,
                            iters_per_epoch=4, eval_every=0) == TimePlan(7, 26)
    # the R-CNN case that left 5 minutes unused: 800 iterations per epoch of 0.5 s, no evaluation until
    # the end (eval_every 0 here), 1,500 s budget, 1 s per save: 3 whole epochs (1,203 s) and a 4th cut at (1,500 - 4) / 0.5 = 2,992 iterations
    assert plan_time_budget(1500, spent_s=0, epoch=0, done_iters=0, sec_per_iter=0.5, eval_s=0, save_s=1,
                            iters_per_epoch=800, eval_every=0) == TimePlan(4, 2_992)
    # more epochs than configured are fine: the budget decides (360 whole epochs need 3,599 more
    # seconds; the last second buys one iteration of a 361st)
    assert plan_time_budget(3600, spent_s=0, epoch=0, done_iters=1, sec_per_iter=1, eval_s=0, save_s=0,
                            iters_per_epoch=10, eval_every=1) == TimePlan(361, 3_601)


def test_plan_cuts_the_current_epoch_when_it_does_not_fit():
    # 1 epoch = 100 iterations of 1 s; 20 s budget, 5 spent after 5 iterations, eval 4 s, save 1 s:
    # 20 - 5 - 4 - 1 = 10 more iterations
    assert plan_time_budget(20, spent_s=5, epoch=0, done_iters=5, sec_per_iter=1, eval_s=4, save_s=1,
                            iters_per_epoch=100, eval_every=1) == TimePlan(1, 15)
    # already over budget: stop where we are
    assert plan_time_budget(20, spent_s=30, epoch=2, done_iters=250, sec_per_iter=1, eval_s=4, save_s=1,
                            iters_per_epoch=100, eval_every=1) == TimePlan(3, 250)
    assert must_stop(10, spent_s=7, sec_per_iter=1, eval_s=1, save_s=1) is False
    assert must_stop(10, spent_s=7.5, sec_per_iter=1, eval_s=1, save_s=1) is True


def test_reanchored_cosine_is_continuous_and_ends_at_zero():
    # the default anchor (1 at iteration 0) is the plain cosine over [0, total]
    assert lr_factor(25, total_iters=100) == 0.5 * (1 + math.cos(math.pi * 25 / 100))
    # a 100-iteration run re-planned at iteration 40: from its factor there to 0 at the new end
    f40 = lr_factor(40, total_iters=100)
    for new_total in (60, 100, 250):  # shortened, unchanged, extended
        kw = {"total_iters": new_total, "anchor_iter": 40, "anchor_factor": f40}
        seq = [lr_factor(i, **kw) for i in range(40, new_total + 1)]
        assert seq[0] == f40 and seq[-1] == 0.0  # continuous at the anchor, the end value at the end
        assert all(b < a for a, b in zip(seq, seq[1:]))
        assert lr_factor(new_total + 5, **kw) == 0.0 and lr_factor(30, **kw) == f40
        # the rest of the cosine from the phase where f40 stands (0.4 pi) to pi at the new end
        mid = 40 + (new_total - 40) // 2
        theta = 0.4 * math.pi + 0.6 * math.pi * (mid - 40) / (new_total - 40)
        assert lr_factor(mid, **kw) == pytest.approx(0.5 * (1 + math.cos(theta)))
    # warm-up multiplies the anchored cosine; step and constant ignore the anchor
    theta0 = math.acos(2 * 0.8 - 1)
    assert lr_factor(5, total_iters=50, warmup_iters=10, warmup_factor=0.1, anchor_iter=4, anchor_factor=0.8) == \
        pytest.approx(0.5 * (1 + math.cos(theta0 + (math.pi - theta0) / 46)) * 0.55)
    assert lr_factor(20, total_iters=50, schedule="step", steps=(1,), iters_per_epoch=10, anchor_iter=15,
                     anchor_factor=0.3) == pytest.approx(0.1)


def test_frequent_reanchors_do_not_stall_the_cosine():
    """A time-budgeted run re-plans every quarter epoch. Re-anchoring at each of them with the total
    unchanged must give the plain cosine (a fresh half cosine per re-anchor, the old rule, kept the
    LR on the cosine's flat top: 0.93 of the base LR at 40 % of the run instead of 0.65), and a
    total that moves by a few iterations at each re-plan stays close to it."""
    total, every = 1000, 50
    for wiggle in (0, 3):
        anchor, seq = (0, 1.0), []
        for i in range(total):
            if i and i % every == 0:  # re-plan: the total moves by +-wiggle, re-anchor where we stand
                anchor = (i, lr_factor(i, total_iters=total_now, anchor_iter=anchor[0], anchor_factor=anchor[1]))
            total_now = total + (wiggle if (i // every) % 2 else -wiggle)
            seq.append(lr_factor(i, total_iters=total_now, anchor_iter=anchor[0], anchor_factor=anchor[1]))
        plain = [lr_factor(i, total_iters=total) for i in range(total)]
        assert max(abs(a - b) for a, b in zip(seq, plain)) < (1e-9 if wiggle == 0 else 0.01)
        assert seq[400] == pytest.approx(0.5 * (1 + math.cos(0.4 * math.pi)), abs=0.01)  # 0.65


def test_wsd_holds_then_decays_linearly_and_reanchors_onto_itself():
    kw = dict(total_iters=1000, schedule="wsd", decay_fraction=0.25)
    assert [lr_factor(i, **kw) for i in (0, 500, 750, 800, 875, 1000, 1200)] == \
        pytest.approx([1.0, 1.0, 1.0, 0.8, 0.5, 0.0, 0.0])
    assert lr_factor(5, warmup_iters=10, warmup_factor=0.1, **kw) == pytest.approx(0.55)
    # a re-plan in the stable part (factor 1) moves the start of the decay with the new end
    assert lr_factor(900, total_iters=1200, schedule="wsd", anchor_iter=600, anchor_factor=1.0) == 1.0
    assert lr_factor(1050, total_iters=1200, schedule="wsd", anchor_iter=600, anchor_factor=1.0) == pytest.approx(0.5)
    # in the decay: on from the anchor's value in a straight line to the new end ...
    f = lr_factor(875, **kw)
    moved = dict(kw, total_iters=1100, anchor_iter=875, anchor_factor=f)
    assert [lr_factor(i, **moved) for i in (875, 987.5, 1100)] == pytest.approx([0.5, 0.25, 0.0])
    # ... which, when the end stays, is the same line
    same = dict(kw, anchor_iter=875, anchor_factor=f)
    assert [lr_factor(i, **same) for i in range(875, 1001)] == pytest.approx([lr_factor(i, **kw) for i in range(875, 1001)])


# ---- results.csv and plots -------------------------------------------------------------------------
def test_results_csv_columns_and_cells(tmp_path):
    history = [
        {"epoch": 1, "iterations": 4, "lr": 0.01, "losses": {"loss_a": 1.5, "loss_b": 0.25}, "loss": 1.75,
         "metrics": {}, "seconds": 2.0},
        {"epoch": 2, "iterations": 8, "lr": 0.005, "losses": {"loss_a": 1.0, "loss_b": 0.125}, "loss": 1.125,
         "metrics": {"bbox_AP": 0.5, "bbox_AP50": float("nan")}, "seconds": 3.5},
    ]
    assert csv_columns(history) == ["epoch", "iterations", "lr", "loss_a", "loss_b", "loss", "bbox_AP",
                                    "bbox_AP50", "seconds"]
    write_results_csv(tmp_path / "results.csv", history)
    rows = list(csv.reader(open(tmp_path / "results.csv")))
    assert rows[1] == ["1", "4", "0.01", "1.5", "0.25", "1.75", "", "", "2"]
    assert rows[2] == ["2", "8", "0.005", "1", "0.125", "1.125", "0.5", "nan", "3.5"]
    # time-budget runs add the epochs planned after each epoch as the last column
    budget = [{**r, "planned_epochs": p} for r, p in zip(history, (5, 7))]
    assert csv_columns(budget)[-2:] == ["seconds", "planned_epochs"]
    write_results_csv(tmp_path / "budget.csv", budget)
    assert [r["planned_epochs"] for r in csv.DictReader(open(tmp_path / "budget.csv"))] == ["5", "7"]
    assert plot_metrics(history, tmp_path / "m.png").stat().st_size > 1000
    assert plot_metrics(history[:1], tmp_path / "none.png") is None
    log = [{"iteration": i, "lr": 0.01 / i, "losses": {"loss": 1.0 / i}} for i in range(1, 5)]
    assert plot_loss_curve(log, tmp_path / "l.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp"))


def test_run_plots_draw_a_single_point_as_a_labelled_marker(tmp_path, monkeypatch):
    """One evaluated epoch (or one logged step) is a marker with its value written beside it."""
    from sceneparse.engine import run_log

    figs = []
    monkeypatch.setattr(run_log, "_save", lambda fig, path: figs.append(fig) or path)
    plot_metrics([{"epoch": 1, "metrics": {"bbox_AP": 0.0185}}], tmp_path / "m.png")
    plot_loss_curve([{"iteration": 3, "lr": 0.01, "losses": {"loss": 1.25}}], tmp_path / "l.png")
    texts = [t.get_text() for fig in figs for ax in fig.axes for t in ax.texts]
    assert "0.0185" in texts and "1.25" in texts and "0.01" in texts


# ---- tasks ------------------------------------------------------------------------------------------
def test_task_heads_and_primary_metric_by_model():
    from engine_helpers import FRCNN, KEYPOINT, MASK, UNET
    from sceneparse.models import zoo

    cases = [("unet", UNET, "semantic", (), "semantic", "miou"),
             ("fasterrcnn_resnet18_fpn", FRCNN, "detect", ("bbox",), "instances", "bbox_AP"),
             ("maskrcnn_resnet18_fpn", MASK, "instance", ("bbox", "segm"), "instances", "segm_AP"),
             ("keypointrcnn_resnet18_fpn", KEYPOINT, "pose", ("bbox", "keypoints"), "keypoints", "keypoints_AP")]
    for name, kw, task, types, kind, metric in cases:
        m = zoo.build(name, num_classes=2 if name != "keypointrcnn_resnet18_fpn" else 1, **kw)
        info = model_info(m)
        assert (info.task, info.iou_types, info.data, info.primary_metric) == (task, types, kind, metric), name
