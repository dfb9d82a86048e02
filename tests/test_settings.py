"""``predict --post-processing KEY=VALUE``: stored post-processing settings replaced by name, with clear errors."""

from __future__ import annotations

import pytest

from biounet.inference.instances import InstanceParams
from biounet.inference.segments import SegmentParams
from biounet.inference.settings import with_overrides


def test_overrides_are_read_as_each_fields_type():
    stored = InstanceParams(min_size_px=16, seed_threshold=0.5, split_prominence=0.3)
    changed = with_overrides(stored, ["min-size-px=40", "seed_threshold = 0.7", "watershed=yes",
                                      "masks=polygons", "background_bias=2"])
    assert changed == InstanceParams(min_size_px=40, seed_threshold=0.7, watershed=True, masks="polygons",
                                     split_prominence=0.3, background_bias=2.0)
    assert type(changed.min_size_px) is int and type(changed.background_bias) is float
    assert with_overrides(stored, []) is stored or with_overrides(stored, []) == stored
    assert with_overrides(SegmentParams(), ["bias=0.4"]).bias == 0.4


@pytest.mark.parametrize("assignment, match", [
    ("seed_threshold", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("nope=1", r"'nope': not a setting .*InstanceParams: min_size_px, seed_threshold"),
    ("min_size_px=4.5", "min_size_px=4.5: expected an integer"),
    ("seed_threshold=high", "expected a number"),
    ("watershed=maybe", "expected true or false"),
    ("seed_threshold=2", "seed_threshold must be in"),
    ("background_bias=0", "background_bias must be a positive number"),
])
def test_bad_overrides_name_the_problem(assignment, match):
    with pytest.raises(ValueError, match=match):
        with_overrides(InstanceParams(), [assignment])


def test_a_membrane_models_settings_list_their_own_keys():
    with pytest.raises(ValueError, match="SegmentParams: threshold, sigma_seeds"):
        with_overrides(SegmentParams(), ["seed_threshold=0.5"])
