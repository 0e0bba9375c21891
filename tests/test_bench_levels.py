"""The comparison runner prints the SIMD level and, with ``levels``, one ratio per level."""

import pytest

from divest import _core
from divest._bench import Case, _levels_case, run_compare


def test_header_names_the_simd_level(capsys):
    assert run_compare(quick=True, only="no-such-family") == 0
    out = capsys.readouterr().out
    assert f"SIMD level: {_core.simd_level()}" in out
    assert f"CPU supports {_core.simd_detected()}" in out


def test_levels_time_divest_per_level_and_restore_detection(capsys):
    seen = []
    levels = ["scalar", _core.simd_detected()]

    def work():
        seen.append(_core.simd_level())
        return 1.0

    case = Case("toy", work, peers={"peer": lambda: 1.0, "absent": "not installed"}, repeat=1)
    _levels_case("fam", case, levels)
    out = capsys.readouterr().out
    # warm-up + one timed call per level, each at its level; the peer once, at detection
    assert seen[:2] == ["scalar", "scalar"] and seen[2:] == [levels[1]] * 2
    assert _core.simd_level() == _core.simd_detected()
    for lv in levels:
        assert f"divest ({lv})" in out and f"{lv} " in out.split("peer")[1]
    assert "skipped" in out


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError):
        run_compare(quick=True, only="no-such-family", levels="sse9")
    assert _core.simd_level() == _core.simd_detected()
