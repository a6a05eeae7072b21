"""benchmarks/memory_report.py: the curriculum line of the memory-horizon plot and its longest corridor."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def memory_report(load_benchmark):
    return load_benchmark("memory_report")


def test_curriculum_joins_the_from_scratch_lengths_and_the_warm_started_stages(memory_report):
    finals = {"ctm": {4: 0.8, 8: 1.0, 16: 0.5}, "ctm_from_L8": {16: 1.0}, "ctm_from_L16": {32: 0.9},
              "lstm": {4: 0.5, 8: 0.5}, "lstm_from_L8": {16: 0.5}}
    lines = memory_report.with_curricula(finals)
    assert lines["ctm curriculum"] == {4: 0.8, 8: 1.0, 16: 1.0, 32: 0.9}
    assert lines["lstm curriculum"] == {4: 0.5, 8: 0.5, 16: 0.5}
    assert set(lines) == {"ctm", "lstm", "ctm curriculum", "lstm curriculum"}
    assert lines["ctm"] == finals["ctm"]  # the from-scratch line is left as it was
    assert memory_report.longest_at_level(lines["ctm"]) == 8
    assert memory_report.longest_at_level(lines["ctm curriculum"]) == 32


def test_a_stage_without_the_from_scratch_agent_is_kept_as_it_is(memory_report):
    assert memory_report.with_curricula({"ctm_from_L16": {32: 0.5}}) == {"ctm_from_L16": {32: 0.5}}
