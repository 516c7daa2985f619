"""The garbage-collector pause around synchronous scene builds (core/catalog.py)."""

from __future__ import annotations

import gc

import pytest

from core.catalog import cyclic_gc_paused


def test_the_collector_is_paused_inside_and_restored_after():
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("a failed build")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
