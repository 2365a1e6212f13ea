"""OpenPose's bottom-up parsing: part confidence maps + part affinity fields -> people
(Cao et al., CVPR 2017, sec. 2.2-2.4), with the conventions of pytorch-openpose's ``Body`` (the
parser ``controlnet_aux`` ships), so that the same maps give the same people.

1. **Part candidates** (sec. 2.4): each of the 18 part maps is smoothed (Gaussian, sigma 3 px, scipy's
   ``gaussian_filter``: radius 12, symmetric border) and its local maxima above ``peak_threshold``
   (``>=`` the 4 neighbours; outside the map counts as 0) are the candidates, scored by the
   *unsmoothed* map there. All parts at once (one convolution, one ``nonzero``).
2. **Limb scores** (eq. 10-11): for every candidate pair ``(d_a, d_b)`` of a limb, the PAF ``L`` is
   sampled at 10 points evenly spaced from ``d_a`` to ``d_b`` (rounded to pixels) and projected on the
   unit vector ``(d_b - d_a) / |d_b - d_a|``: ``E`` = the samples' mean, plus the distance prior
   ``min(H / (2 |d_b - d_a|) - 1, 0)`` (limbs longer than half the image height are penalised).
   A pair is a candidate if more than 80 % of its samples exceed ``limb_threshold`` and the score is
   positive. All pairs of a limb at once (``[n_a, n_b, 10]`` samples).
3. **Bipartite matching** (eq. 13-14): per limb, the greedy maximum-weight matching of the paper --
   candidates by decreasing score, each part used at most once, at most ``min(n_a, n_b)`` limbs. (The
   greedy order is inherently sequential; it runs over the few candidates that pass step 2.)
4. **Assembly**: limbs in the fixed order of the 19 connections (a spanning tree of the skeleton, plus
   two redundant ear-shoulder connections) join people that share a part; two partial people that
   share no part type are merged; a limb of neither starts a new person (not the two redundant ones).
   People with fewer than ``min_parts`` parts or a total score per part below ``min_part_score`` are
   dropped. The total score sums the parts' peak values and the limbs' scores.

OpenPose's 18 parts: nose, neck, right shoulder / elbow / wrist, left shoulder / elbow / wrist, right
hip / knee / ankle, left hip / knee / ankle, right eye, left eye, right ear, left ear. COCO's 17 are
the same without the neck (which OpenPose's COCO training data defines as the mean of the shoulders):
:data:`OPENPOSE_TO_COCO` re-indexes, :func:`people_to_coco` drops the neck.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...structures.instances import Instances

__all__ = ["LIMBS", "PAF_CHANNELS", "OPENPOSE_TO_COCO", "ParsedPeople", "find_peaks", "limb_scores",
           "match_limbs", "assemble", "parse_people", "people_to_coco", "gaussian_smooth"]

#: the 19 connections (0-based OpenPose parts), in the order of assembly
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
#: the PAF channels ``(x, y)`` of each connection
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7),
                (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27))
#: COCO keypoint ``k`` is OpenPose part ``OPENPOSE_TO_COCO[k]`` (OpenPose part 1, the neck, is not in COCO)
OPENPOSE_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
NUM_PARTS = 18
#: connections after which a limb of two unassigned parts no longer starts a person (the redundant ones)
_NEW_PERSON_LIMBS = 17


@dataclass
class ParsedPeople:
    """The parser's result in OpenPose's own terms (as ``Body.__call__`` returns them).

    Attributes:
        candidates: ``float64 [P, 4]`` all part candidates ``(x, y, score, id)`` (image px; ``id`` = row).
        subset: ``float64 [N, 20]`` one row per person: columns 0..17 the candidate id of each OpenPose
            part (-1: missing), 18 the total score, 19 the number of parts.
    """

    candidates: Tensor
    subset: Tensor

    def __len__(self) -> int:
        return int(self.subset.shape[0])


def gaussian_smooth(maps: Tensor, sigma: float = 3.0, truncate: float = 4.0) -> Tensor:
    """scipy's ``gaussian_filter(map, sigma)`` of each ``[C, H, W]`` map: separable, radius
    ``int(truncate * sigma + 0.5)``, symmetric ("reflect") border ``d c b a | a b c d``; float64."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=maps.device)
    g = torch.exp(-0.5 / sigma**2 * x**2)
    g = g / g.sum()
    C, H, W = maps.shape

    def sym(n: int) -> Tensor:  # indices of the symmetric extension by r on both sides
        i = torch.arange(-r, n + r, device=maps.device) % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)

    m = maps.double()
    ey = m[:, sym(H)]  # along y first (scipy's axis 0), then x: a weighted sum of shifted views
    m = sum(g[t] * ey[:, t:t + H] for t in range(2 * r + 1))
    ex = m[:, :, sym(W)]
    return sum(g[t] * ex[:, :, t:t + W] for t in range(2 * r + 1))


def find_peaks(heatmaps: Tensor, threshold: float = 0.1, sigma: float = 3.0) -> Tensor:
    """Part candidates ``[P, 4]`` ``(x, y, score, id)`` (float64) of the first 18 ``heatmaps [>=18, H, W]``
    and the part of each ``[P]``: smoothed-map local maxima above ``threshold``, ordered by part, then
    row, then column (numpy's ``nonzero`` order); ``score`` from the unsmoothed map."""
    raw = heatmaps[:NUM_PARTS].double()
    s = gaussian_smooth(raw, sigma)
    p = F.pad(s, (1, 1, 1, 1))  # neighbours outside the map are 0
    peak = (s >= p[:, :-2, 1:-1]) & (s >= p[:, 2:, 1:-1]) & (s >= p[:, 1:-1, :-2]) & (s >= p[:, 1:-1, 2:]) & \
        (s > threshold)
    part, y, x = torch.nonzero(peak, as_tuple=True)
    score = raw[part, y, x]
    ids = torch.arange(part.numel(), dtype=torch.float64, device=raw.device)
    return torch.stack([x.double(), y.double(), score, ids], dim=1), part


def limb_scores(a: Tensor, b: Tensor, paf_x: Tensor, paf_y: Tensor, image_height: int,
                threshold: float = 0.05, samples: int = 10) -> tuple[Tensor, Tensor]:
    """Scores ``[n_a, n_b]`` of every candidate limb ``a[i] -> b[j]`` (``a [n_a, 2]``, ``b [n_b, 2]`` x, y px)
    on one PAF ``(paf_x, paf_y) [H, W]``, and whether each pair passes the criteria (module docstring,
    step 2). The samples follow ``numpy.linspace`` (``start + i * (stop - start) / (n - 1)``, the last
    one ``stop``), rounded half to even, and are summed in sample order, so the scores equal the reference
    parser's to the last bit."""
    a, b = a.double(), b.double()
    vec = b[None, :, :] - a[:, None, :]  # [n_a, n_b, 2]
    norm = torch.sqrt(vec[..., 0] * vec[..., 0] + vec[..., 1] * vec[..., 1]).clamp(min=0.001)
    unit = vec / norm[..., None]
    t = torch.arange(samples, dtype=torch.float64, device=a.device)
    step = vec / (samples - 1)
    pts = t[:, None, None, None] * step[None] + a[None, :, None, :]  # [S, n_a, n_b, 2]
    pts[-1] = b[None, :, :].expand_as(vec)
    idx = torch.round(pts).long()
    H, W = paf_x.shape
    ix, iy = idx[..., 0].clamp(0, W - 1), idx[..., 1].clamp(0, H - 1)
    px, py = paf_x.double()[iy, ix], paf_y.double()[iy, ix]  # [S, n_a, n_b]
    proj = px * unit[..., 0] + py * unit[..., 1]
    total = torch.zeros_like(norm)
    for k in range(samples):  # in sample order: the reference sums with Python's sum()
        total = total + proj[k]
    score = total / samples + torch.clamp(0.5 * image_height / norm - 1, max=0)
    ok = ((proj > threshold).sum(0) > 0.8 * samples) & (score > 0)
    return score, ok


def match_limbs(score: Tensor, ok: Tensor) -> list[tuple[int, int, float]]:
    """Greedy bipartite matching of one limb type: the passing pairs by decreasing score (ties in
    row-major order), each ``a`` and each ``b`` used once, at most ``min(n_a, n_b)`` limbs.
    Returns ``(i, j, score)`` triples."""
    n_a, n_b = score.shape
    flat = torch.where(ok.flatten())[0]
    order = flat[torch.argsort(score.flatten()[flat], descending=True, stable=True)]
    used_a: set[int] = set()
    used_b: set[int] = set()
    out: list[tuple[int, int, float]] = []
    for f in order.tolist():
        i, j = divmod(f, n_b)
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j, float(score[i, j])))
        if len(out) >= min(n_a, n_b):
            break
    return out


def assemble(candidates: Tensor, connections: list[list[tuple[float, float, float]] | None],
             min_parts: int = 4, min_part_score: float = 0.4) -> Tensor:
    """People ``[N, 20]`` from the matched limbs: ``connections[k]`` the ``(id_a, id_b, score)`` of limb type
    ``k`` (``None`` where a part type had no candidate). Module docstring, step 4; rows as
    :class:`ParsedPeople.subset`."""
    cand_score = candidates[:, 2].tolist()
    subset: list[list[float]] = []
    for k, conns in enumerate(connections):
        if conns is None:
            continue
        ia, ib = LIMBS[k]
        for id_a, id_b, s in conns:
            found = [j for j, row in enumerate(subset) if row[ia] == id_a or row[ib] == id_b][:2]
            if len(found) == 1:
                row = subset[found[0]]
                if row[ib] != id_b:
                    row[ib] = id_b
                    row[-1] += 1
                    row[-2] += cand_score[int(id_b)] + s
            elif len(found) == 2:
                r1, r2 = subset[found[0]], subset[found[1]]
                if not any(x >= 0 and y >= 0 for x, y in zip(r1[:-2], r2[:-2])):  # disjoint: merge
                    for c in range(NUM_PARTS):
                        r1[c] += r2[c] + 1
                    r1[-2] += r2[-2]
                    r1[-1] += r2[-1]
                    r1[-2] += s
                    del subset[found[1]]
                else:
                    r1[ib] = id_b
                    r1[-1] += 1
                    r1[-2] += cand_score[int(id_b)] + s
            elif k < _NEW_PERSON_LIMBS:
                row = [-1.0] * (NUM_PARTS + 2)
                row[ia], row[ib] = id_a, id_b
                row[-1] = 2
                row[-2] = cand_score[int(id_a)] + cand_score[int(id_b)] + s
                subset.append(row)
    keep = [r for r in subset if not (r[-1] < min_parts or r[-2] / r[-1] < min_part_score)]
    return torch.tensor(keep, dtype=torch.float64).reshape(-1, NUM_PARTS + 2)


def parse_people(heatmaps: Tensor, pafs: Tensor, *, peak_threshold: float = 0.1, limb_threshold: float = 0.05,
                 min_parts: int = 4, min_part_score: float = 0.4, sigma: float = 3.0) -> ParsedPeople:
    """People from full-resolution ``heatmaps [19, H, W]`` and ``pafs [38, H, W]`` of one image
    (steps 1-4 of the module docstring)."""
    if heatmaps.ndim != 3 or heatmaps.shape[0] < NUM_PARTS or pafs.ndim != 3 or pafs.shape[0] != 2 * len(LIMBS) \
            or heatmaps.shape[1:] != pafs.shape[1:]:
        raise ValueError(f"expected heatmaps [19, H, W] and pafs [38, H, W] of one size, got "
                         f"{tuple(heatmaps.shape)} and {tuple(pafs.shape)}")
    H = int(heatmaps.shape[1])
    candidates, part = find_peaks(heatmaps, peak_threshold, sigma)
    pafs = pafs.double()
    by_part = [torch.where(part == p)[0] for p in range(NUM_PARTS)]
    connections: list[list[tuple[float, float, float]] | None] = []
    for (pa, pb), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
        a_idx, b_idx = by_part[pa], by_part[pb]
        if a_idx.numel() == 0 or b_idx.numel() == 0:
            connections.append(None)
            continue
        score, ok = limb_scores(candidates[a_idx, :2], candidates[b_idx, :2], pafs[cx], pafs[cy], H,
                                limb_threshold)
        connections.append([(float(candidates[a_idx[i], 3]), float(candidates[b_idx[j], 3]), s)
                            for i, j, s in match_limbs(score, ok)])
    return ParsedPeople(candidates, assemble(candidates, connections, min_parts, min_part_score))


def people_to_coco(people: ParsedPeople, image_size: tuple[int, int]) -> Instances:
    """COCO-17 :class:`Instances` of parsed people: ``keypoints [N, 17, 3]`` (``v`` = 1 where the part was
    found, else 0 with ``x = y = 0``), ``keypoint_scores`` (the part's peak value, 0 if missing), ``scores``
    (total score per part, clipped to ``[0, 1]``), ``boxes`` (extent of the found COCO keypoints),
    ``labels`` 0. The neck (OpenPose part 1) is dropped."""
    sub = people.subset
    n = sub.shape[0]
    ids = sub[:, list(OPENPOSE_TO_COCO)].long()  # [N, 17]
    found = ids >= 0
    cand = people.candidates.float()
    safe = ids.clamp(min=0)
    xy = cand[safe][..., :2] if cand.numel() else torch.zeros(n, 17, 2)
    ks = cand[safe][..., 2] if cand.numel() else torch.zeros(n, 17)
    xy = torch.where(found[..., None], xy, torch.zeros_like(xy))
    ks = torch.where(found, ks, torch.zeros_like(ks))
    keypoints = torch.cat([xy, found[..., None].float()], dim=2)
    big = torch.tensor(float("inf"))
    lo = torch.where(found[..., None], xy, big).amin(dim=1)
    hi = torch.where(found[..., None], xy, -big).amax(dim=1)
    boxes = torch.cat([lo, hi], dim=1) if n else torch.zeros(0, 4)
    boxes = torch.where(torch.isfinite(boxes), boxes, torch.zeros_like(boxes))
    scores = (sub[:, -2] / sub[:, -1]).clamp(0, 1).float() if n else torch.zeros(0)
    return Instances(image_size, boxes=boxes.float(), labels=torch.zeros(n, dtype=torch.long), scores=scores,
                     keypoints=keypoints.float(), keypoint_scores=ks.float())
