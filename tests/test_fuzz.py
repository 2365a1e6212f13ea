"""The fuzz tier in CI: every reader and validator gets mutated valid files (hypothesis, fixed seed,
small budget). A finding is an exception that is not a SceneparseError naming the file, or a write
outside the output folder. ``benchmarks/fuzz.py`` runs the same targets with a large budget."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import Seeds, run_case, targets

BUDGET = 12  # cases per target in CI (benchmarks/fuzz.py: thousands)
pytestmark = pytest.mark.slow  # a tier of its own (~20 s): CI runs it, the contributors' fast tier does not


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    seeds = Seeds(root / "seeds")
    sandbox = root / "sandbox"
    sandbox.mkdir()
    return {t.name: t for t in targets(seeds)}, sandbox


NAMES = ["coco_instances", "coco_instances_strict", "coco_convert", "coco_eval_gt", "coco_keypoints", "coco_results",
         "coco_panoptic", "yolo", "voc", "png_masks", "checkpoint_bytes", "checkpoint_fields", "config_yaml"]


def test_every_target_is_fuzzed(world):
    assert sorted(world[0]) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_files_end_in_a_named_error_or_success(world, name):
    table, sandbox = world
    target = table[name]

    @settings(max_examples=BUDGET, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(rng=st.randoms(use_true_random=False))
    def case(rng):
        outcome = run_case(target, sandbox, 0, rng)
        assert outcome.kind != "finding", outcome.detail

    case()
