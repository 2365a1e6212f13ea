"""OpenPose body: the network equals controlnet_aux's ``bodypose_model`` on shared random weights (both
state-dict layouts), and the parser finds the same people as controlnet_aux's ``Body`` on the same maps
(maps rendered from synthetic people: Gaussian part peaks + unit vectors along the limbs)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sceneparse.errors import CheckpointError
from sceneparse.models import zoo
from sceneparse.models.pose.paf_parsing import (
    LIMBS,
    OPENPOSE_TO_COCO,
    PAF_CHANNELS,
    gaussian_smooth,
    parse_people,
    people_to_coco,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cn_body = pytest.importorskip("controlnet_aux.open_pose.body")
    cn_model = pytest.importorskip("controlnet_aux.open_pose.model")
    cn_util = pytest.importorskip("controlnet_aux.open_pose.util")

from sceneparse.data.synthetic.person import pose_keypoints  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


@pytest.fixture(scope="module")
def reference():
    """controlnet_aux's bodypose_model with random (default-initialised) weights, its output on a
    real-sized input (184 x 248: what Body feeds the network for a 368 x 496 image) and its state dict."""
    torch.manual_seed(0)
    ref = cn_model.bodypose_model().eval()
    x = torch.rand(1, 3, 184, 248) - 0.5
    with torch.no_grad():
        out = ref(x)
    return ref.state_dict(), x, out


def test_network_equals_bodypose_model_body_pose_model_pth_layout(reference, tmp_path):
    state, x, (paf_ref, heat_ref) = reference
    flat = {k.split(".", 1)[1]: v for k, v in state.items()}  # body_pose_model.pth: no block prefix
    assert "conv1_1.weight" in flat and "Mconv7_stage6_L2.bias" in flat
    path = tmp_path / "body_pose_model.pth"
    torch.save(flat, path)
    model = zoo.build("openpose_body", weights=str(path)).eval()
    with torch.no_grad():
        paf, heat = model(x)
    assert paf.shape == (1, 38, 23, 31) and heat.shape == (1, 19, 23, 31)
    d_paf, d_heat = (paf - paf_ref).abs().max().item(), (heat - heat_ref).abs().max().item()
    assert d_paf < 1e-4 and d_heat < 1e-4, (d_paf, d_heat)  # measured: 0.0 and 0.0
    assert paf_ref.abs().max() > 1e-3 and heat_ref.abs().max() > 1e-3  # not a trivially zero output
    assert (heat >= 0).all()  # bodypose_model's ReLU after Mconv7_stage6_L2, kept


def test_network_loads_bodypose_model_state_dict_and_bad_checkpoints_name_keys(reference):
    state, _, _ = reference
    model = zoo.build("openpose_body", weights=state)  # the keys of bodypose_model itself (model0.conv1_1.weight ...)
    key = "model6_2.Mconv7_stage6_L2.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    bad = {k.split(".", 1)[1]: v for k, v in state.items() if not k.endswith("Mconv3_stage4_L1.bias")}
    bad["conv4_4_CPM.weight"] = torch.zeros(64, 256, 3, 3)
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        zoo.load_checkpoint(model, bad)
    msg = str(e.value)
    assert "model4_1.Mconv3_stage4_L1.bias" in msg and "model0.conv4_4_CPM.weight" in msg and "extra.weight" in msg


# ---- parsing --------------------------------------------------------------------------------------

def _people_keypoints() -> list[np.ndarray]:
    """Three synthetic people (sceneparse's stick figures) as OpenPose-18 integer pixel positions."""
    people = []
    for (fx, fy), h, kw in (((90, 270), 200, dict(arm_abduction=(0.5, 0.3), elbow=(0.6, -0.2))),
                            ((215, 285), 210, dict(lean=0.1, hip=(0.25, 0.1), knee=(0.3, 0.0))),
                            ((330, 262), 180, dict(arm_abduction=(1.3, 0.9), body_turn=0.3, head_yaw=0.2))):
        kp, _, _ = pose_keypoints(h, **kw)
        coco = np.round(kp + np.array([fx, fy - 0.47 * h]))
        op = np.zeros((18, 2))
        for k, o in enumerate(OPENPOSE_TO_COCO):
            op[o] = coco[k]
        op[1] = np.round((coco[5] + coco[6]) / 2)  # the neck: mean of the shoulders
        people.append(op)
    return people


def _render(people: list[np.ndarray], size=(320, 420), sigma=3.0, width=3.0) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [H, W, 19] (max of unit Gaussians per part, background = 1 - max) and PAFs [H, W, 38]
    (the unit vector of a limb within ``width`` px of it, averaged where people overlap)."""
    H, W = size
    heat = np.zeros((H, W, 19))
    r = int(5 * sigma)
    for p in people:  # each Gaussian in a window of +-5 sigma (exp(-12.5) ~ 4e-6 beyond)
        for k in range(18):
            x0, y0 = max(int(p[k, 0]) - r, 0), max(int(p[k, 1]) - r, 0)
            x1, y1 = min(int(p[k, 0]) + r + 1, W), min(int(p[k, 1]) + r + 1, H)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            g = np.exp(-((xs - p[k, 0]) ** 2 + (ys - p[k, 1]) ** 2) / (2 * sigma**2))
            win = heat[y0:y1, x0:x1, k]
            np.maximum(win, g, out=win)
    heat[..., 18] = 1 - heat[..., :18].max(-1)
    paf = np.zeros((H, W, 38))
    count = np.zeros((H, W, 19))
    for p in people:
        for k, ((a, b), (cx, cy)) in enumerate(zip(LIMBS, PAF_CHANNELS)):
            v = p[b] - p[a]
            n = np.linalg.norm(v)
            if n < 1:
                continue
            u = v / n
            x0, y0 = max(int(min(p[a, 0], p[b, 0]) - width - 1), 0), max(int(min(p[a, 1], p[b, 1]) - width - 1), 0)
            x1, y1 = min(int(max(p[a, 0], p[b, 0]) + width + 2), W), min(int(max(p[a, 1], p[b, 1]) + width + 2), H)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            along = (xs - p[a, 0]) * u[0] + (ys - p[a, 1]) * u[1]
            across = np.abs((xs - p[a, 0]) * u[1] - (ys - p[a, 1]) * u[0])
            on = (along >= 0) & (along <= n) & (across <= width)
            paf[y0:y1, x0:x1, cx] += on * u[0]
            paf[y0:y1, x0:x1, cy] += on * u[1]
            count[y0:y1, x0:x1, k] += on
    for k, (cx, cy) in enumerate(PAF_CHANNELS):
        paf[..., cx] /= np.maximum(count[..., k], 1)
        paf[..., cy] /= np.maximum(count[..., k], 1)
    return heat.astype(np.float32), paf.astype(np.float32)


def _reference_parse(heat: np.ndarray, paf: np.ndarray, monkeypatch):
    """controlnet_aux's Body.__call__ on given full-resolution maps: its network is replaced by a stub
    and its resizes by ones that return the maps as they are, so only its parsing runs."""
    H, W = heat.shape[:2]

    def resize_k(x, fx, fy):
        if x.ndim == 3 and x.shape[2] == 3:  # the image: left as it is
            return x
        return {19: heat, 38: paf}[x.shape[2]]

    def resize(x, s):
        assert tuple(s) == (H, W) and x.shape[:2] == (H, W)
        return x

    monkeypatch.setattr(cn_util, "smart_resize_k", resize_k)
    monkeypatch.setattr(cn_util, "smart_resize", resize)

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros(1, 38, 2, 2), torch.zeros(1, 19, 2, 2)

    body = cn_body.Body.__new__(cn_body.Body)  # no checkpoint: __init__ would load one
    body.model = Stub()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return body(np.zeros((H, W, 3), dtype=np.uint8))


def test_gaussian_smooth_equals_scipy():
    from scipy.ndimage import gaussian_filter

    m = torch.rand(2, 37, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = gaussian_smooth(m, 3.0)
    for c in range(2):
        assert np.abs(out[c].numpy() - gaussian_filter(m[c].numpy(), sigma=3)).max() < 1e-12


def test_parser_finds_the_same_people_as_controlnet_aux(monkeypatch):
    people = _people_keypoints()
    heat, paf = _render(people)
    cand_ref, subset_ref = _reference_parse(heat, paf, monkeypatch)
    parsed = parse_people(torch.from_numpy(heat).permute(2, 0, 1), torch.from_numpy(paf).permute(2, 0, 1))
    cand = parsed.candidates.numpy()
    cand_ref = np.asarray(cand_ref, dtype=np.float64)
    assert cand.shape == cand_ref.shape and np.abs(cand - cand_ref).max() < 1e-9
    assert len(subset_ref) == 3 and parsed.subset.shape == subset_ref.shape
    assert np.abs(parsed.subset.numpy() - subset_ref).max() < 1e-9  # same people, parts, scores, order
    # and they are the people drawn: every part at its pixel
    res = people_to_coco(parsed, heat.shape[:2])
    assert len(res) == 3 and res.keypoints.shape == (3, 17, 3)
    found = 0
    for p in people:
        coco = p[list(OPENPOSE_TO_COCO)]
        d = np.abs(res.keypoints[:, None, :, :2].numpy() - coco[None, None]).max(-1).max(-1)[:, 0]
        i = int(d.argmin())
        ok = res.keypoints[i, :, 2] > 0
        found += int(ok.sum())
        assert np.abs(res.keypoints[i, ok, :2].numpy() - coco[ok.numpy()]).max() == 0
        vis = res.keypoints[i, ok, :2]
        assert torch.allclose(res.boxes[i], torch.cat([vis.min(0).values, vis.max(0).values]))
    assert found >= 45  # of 51 (parts closer than the smoothing can separate may merge)
    assert ((res.scores > 0) & (res.scores <= 1)).all()


def test_parser_multi_person_crowded_scene_matches(monkeypatch):
    """More people, overlapping limbs and a shared PAF region: still the reference's people."""
    people = _people_keypoints()
    shifted = [p + np.array([40.0, 12.0]) for p in people[:2]]
    heat, paf = _render(people + shifted, size=(340, 460))
    cand_ref, subset_ref = _reference_parse(heat, paf, monkeypatch)
    parsed = parse_people(torch.from_numpy(heat).permute(2, 0, 1), torch.from_numpy(paf).permute(2, 0, 1))
    assert parsed.subset.shape == subset_ref.shape and len(subset_ref) >= 3
    assert np.abs(parsed.subset.numpy() - subset_ref).max() < 1e-9
    assert np.abs(parsed.candidates.numpy() - np.asarray(cand_ref, dtype=np.float64)).max() < 1e-9


def test_predict_end_to_end_runs_and_maps_to_coco():
    model = zoo.build("openpose_body", scales=(0.25,)).eval()
    out = model.predict([torch.rand(3, 120, 160)])
    r = out[0]
    assert r.image_size == (120, 160) and r.keypoints.shape[1:] == (17, 3)
    info = model.info
    assert info.task == "pose" and info.num_keypoints == 17 and info.primary_metric == "keypoints_AP"
    pafs, heat = model.maps(torch.rand(3, 120, 160))
    assert pafs.shape == (38, 120, 160) and heat.shape == (19, 120, 160)
    assert math.isfinite(float(pafs.abs().sum()))
