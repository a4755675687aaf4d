"""Corrupt cache and result files (chaos test 6, unit level): detected, reported, recomputed.

The whole-run version (damaged Prefect results in a finished run folder, then a re-run) is in
tests/test_chaos.py.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest

from fdd_core.backends.base import Completion, SamplingParams
from fdd_core.backends.cache import RequestCache, cached_generate, request_key
from tasks.common import CheckedPickleSerializer, check_result_files

PARAMS = SamplingParams(seed=3, temperature=0.7, n=1)


class CountingBackend:
    name = "fake"
    model_id = "m"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += len(prompts)
        return [[Completion(text=f"answer to {p}")] for p in prompts]

    def close(self) -> None:
        pass


def test_cache_entry_edited_but_still_valid_json_is_a_miss_with_a_warning(tmp_path, caplog):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    assert cached_generate(backend, ["q1"], PARAMS, cache=cache)[0][0].text == "answer to q1"
    key = request_key("fake", "m", "", "q1", PARAMS)
    path = cache.path(key)
    entry = json.loads(path.read_text())
    entry["completions"][0]["text"] = "a wrong answer"  # parses fine, but is not what was paid
    path.write_text(json.dumps(entry))
    with caplog.at_level(logging.WARNING):
        got = cached_generate(backend, ["q1"], PARAMS, cache=cache)
    assert got[0][0].text == "answer to q1", "a damaged entry was returned as data"
    assert backend.calls == 2 and cache.stats.corrupt == 1
    assert str(path) in caplog.text and "checksum mismatch" in caplog.text
    assert cache.get(key)[0].text == "answer to q1", "the entry is rewritten"


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_cache_entry_truncated_or_garbled_is_recomputed(tmp_path, caplog, damage):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    cached_generate(backend, ["q2"], PARAMS, cache=cache)
    path = cache.path(request_key("fake", "m", "", "q2", PARAMS))
    raw = path.read_bytes()
    path.write_bytes(
        {"truncate": raw[: len(raw) // 2], "garble": raw[:10] + b"\xff\x00" + raw[12:]}.get(
            damage, b""
        )
    )
    with caplog.at_level(logging.WARNING):
        got = cached_generate(backend, ["q2"], PARAMS, cache=cache)
    assert got[0][0].text == "answer to q2" and backend.calls == 2
    assert str(path) in caplog.text


def test_old_entries_without_checksum_are_still_read(tmp_path):
    cache = RequestCache(tmp_path)
    key = request_key("fake", "m", "", "q3", PARAMS)
    cache.put(key, [Completion(text="kept")])
    path = cache.path(key)
    entry = json.loads(path.read_text())
    del entry["sha256"]
    path.write_text(json.dumps(entry))
    assert cache.get(key)[0].text == "kept"


def test_checked_serializer_round_trips_and_refuses_any_change():
    ser = CheckedPickleSerializer()
    blob = ser.dumps({"rows": [1, 2, 3]})
    assert ser.loads(blob) == {"rows": [1, 2, 3]}
    head, payload = blob.split(b"\n", 1)
    raw = bytearray(base64.decodebytes(payload))
    raw[-3] ^= 0x01  # one flipped bit inside the pickled value
    with pytest.raises(ValueError, match="checksum mismatch"):
        ser.loads(head + b"\n" + base64.encodebytes(bytes(raw)))
    with pytest.raises(ValueError, match="no fdd checksum header"):
        ser.loads(payload)


def _result_file(folder, name, value):
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata

    meta = ResultRecordMetadata(
        storage_key=str(folder / name), expiration=None, serializer=CheckedPickleSerializer()
    )
    path = folder / name
    path.write_bytes(ResultRecord(metadata=meta, result=value).serialize())
    return path


def test_damaged_prefect_result_files_are_moved_aside_and_reported(tmp_path, caplog):
    good = _result_file(tmp_path, "a" * 32, {"shard": 0})
    truncated = _result_file(tmp_path, "b" * 32, {"shard": 1})
    truncated.write_bytes(truncated.read_bytes()[:50])
    altered = _result_file(tmp_path, "c" * 32, {"shard": 2, "text": "right"})
    record = json.loads(altered.read_text())
    head, payload = record["result"].encode().split(b"\n", 1)
    pickled = base64.decodebytes(payload).replace(b"right", b"wrong")
    record["result"] = (head + b"\n" + base64.encodebytes(pickled)).decode()
    altered.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        bad = check_result_files(tmp_path)
    assert sorted(bad) == sorted([truncated, altered])
    assert good.exists() and not truncated.exists() and not altered.exists()
    assert (tmp_path / (truncated.name + ".corrupt")).exists()
    for path in (truncated, altered):
        assert f"damaged result file {path}" in caplog.text
    assert "checksum mismatch" in caplog.text
    assert check_result_files(tmp_path) == [], "a second scan finds nothing new"
    assert check_result_files(tmp_path / "absent") == []
