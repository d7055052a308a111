"""atomr serve: bearer-token auth, the body limit, bad input never a 5xx, the JSON encoder."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import socket
import uuid

import httpx
import pytest

from atomr import AtomrError, LmdbStore
from atomr.server import create_app
from atomr.server.encode import to_json
from test_server_support import T, TOKEN, runtime, serve

pytestmark = pytest.mark.timeout(120)

PROTECTED = ["/api/workflows", "/api/runs", "/api/runs/approval/x", "/api/runs/approval/x/events", "/metrics"]


def test_with_a_token_api_and_metrics_need_it():
    with serve(token=TOKEN) as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        for path in PROTECTED:
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"] == "Unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
            for bad in ("Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", TOKEN):
                r = c.get(path, headers={"Authorization": bad})
                assert r.status_code == 401, (path, bad)
        r = c.post("/api/workflows/approval/runs", json={"input": {"topic": "a"}, "run_id": "nope"})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/api/runs", headers=auth).json() == {"runs": [], "next_cursor": None}  # nothing started
        r = c.post("/api/workflows/approval/runs", json={"input": {"topic": "a"}}, headers=auth)
        assert r.status_code == 201
        assert c.get("/api/workflows", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        # probes and pages hold no data: no token needed
        assert c.get("/healthz").json() == {"ok": True}
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_without_a_token_everything_is_open():
    with serve() as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        assert c.get("/api/workflows").status_code == 200
        assert c.get("/metrics").status_code in (200, 501)
        assert c.get("/api/workflows", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_bodies_over_the_limit_are_413_and_change_nothing():
    with serve(max_body=1024) as (srv, rt), httpx.Client(base_url=srv.url, timeout=T) as c:
        big = {"input": {"topic": "x" * 2000}, "run_id": "big"}
        r = c.post("/api/workflows/approval/runs", json=big)
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(8):
                yield b" " * 256

        r = c.post("/api/workflows/approval/runs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/api/runs").json()["runs"] == []
        assert rt.runs() == []
        ok = c.post("/api/workflows/approval/runs", json={"input": {"topic": "small"}})
        assert ok.status_code == 201


def test_create_app_checks_its_arguments():
    rt = runtime()
    try:
        for bad in (0, -1, 1.5, True, "16"):
            with pytest.raises(AtomrError):
                create_app(rt, max_body=bad)
        with pytest.raises(AtomrError):
            create_app(rt, token="")
    finally:
        rt.close()


BAD_REQUESTS = [
    ("GET", "/api/runs?limit=-5", None), ("GET", "/api/runs?limit=99999999999999999999", None),
    ("GET", "/api/runs?cursor=%00%01", None), ("GET", "/api/runs?status=%F0%9F%92%A5", None),
    ("GET", "/api/runs/approval/%00", None), ("GET", "/api/runs/approval/" + "x" * 3000, None),
    ("GET", "/api/runs/%E2%98%83/x/history", None), ("GET", "/api/runs/approval/x/wait?timeout=nan", None),
    ("GET", "/api/runs/approval/x/wait?timeout=inf", None), ("GET", "/api/runs/approval/x/events?after=-1", None),
    ("POST", "/api/workflows/approval/runs", b"null"), ("POST", "/api/workflows/approval/runs", b'"str"'),
    ("POST", "/api/workflows/approval/runs", b'{"input": {"topic": NaN}, "run_id": "nan-run"}'),
    ("POST", "/api/workflows/approval/runs", b'{"input": {"topic": 1e999}}'),
    ("POST", "/api/workflows/approval/runs", b'{"input": {}, "if_exists": 5}'),
    ("POST", "/api/workflows/approval/runs", b'{"input": {}, "meta": {"parent": "x"}}'),
    ("POST", "/api/workflows/approval/runs", b'{"input": {}, "run_id": "a/b"}'),
    ("POST", "/api/runs/approval/x/resume", b'{"resume": {"a": 1}, "goto": ""}'),
    ("POST", "/api/runs/approval/x/resume", b'{"update": {"": 1}}'),
    ("POST", "/api/runs/approval/x/fork", b'{"super_step": -1}'),
    ("POST", "/api/runs/approval/x/fork", b'{"super_step": 99999999999999999999999}'),
    ("POST", "/api/runs/approval/x/cancel", b'{"reason": ["x"]}'),
    ("PUT", "/api/runs/approval/x", b"{}"),
]


def test_bad_requests_never_get_a_5xx_nor_change_the_store(tmp_store_path):
    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, rt), httpx.Client(base_url=srv.url, timeout=T) as c:
        c.post("/api/workflows/approval/runs", json={"input": {"topic": "t"}, "run_id": "x"})
        c.get("/api/runs/approval/x/wait", params={"timeout": T})
        before = c.get("/api/runs/approval/x/history").json()
        for method, path, body in BAD_REQUESTS:
            r = c.request(method, path, content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (method, path, body, r.status_code, r.text)
            assert set(r.json()) == {"error", "message"}, r.text
        assert c.get("/api/runs/approval/x/history").json() == before
        runs = [r["run_id"] for r in c.get("/api/runs").json()["runs"]]
        assert runs == ["x"]


def test_a_raw_malformed_request_line_does_not_crash_the_server():
    with serve() as (srv, _):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=T) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            s.recv(1024)
        with httpx.Client(base_url=srv.url, timeout=T) as c:
            assert c.get("/healthz").json() == {"ok": True}


def test_to_json_makes_every_stored_type_json():
    value = {
        "nan": math.nan, "inf": math.inf, "-inf": -math.inf, "b": b"\x00\xff", "ba": bytearray(b"ab"),
        "t": (1, 2), "s": {3, 1, 2}, "fs": frozenset({"b", "a"}), "mixed": {1, "a"},
        "dt": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "d": dt.date(2026, 1, 2),
        "td": dt.timedelta(seconds=90), "dec": decimal.Decimal("1.10"), "u": uuid.UUID(int=1),
        1: "int key", (1, 2): "tuple key", None: "none key",
    }
    out = to_json(value)
    assert out["nan"] == "NaN" and out["inf"] == "Infinity" and out["-inf"] == "-Infinity"
    assert out["b"] == "AP8=" and out["ba"] == "YWI="
    assert out["t"] == [1, 2] and out["s"] == [1, 2, 3] and out["fs"] == ["a", "b"] and len(out["mixed"]) == 2
    assert out["dt"] == "2026-01-02T03:04:05+00:00" and out["d"] == "2026-01-02" and out["td"] == 90.0
    assert out["dec"] == "1.10" and out["u"] == str(uuid.UUID(int=1))
    assert out["1"] == "int key" and out["[1,2]"] == "tuple key" and out["null"] == "none key"
    deep: object = 1
    for _ in range(500):
        deep = [deep]
    flat = to_json(deep)
    depth = 0
    while isinstance(flat, list):
        flat, depth = flat[0], depth + 1
    assert flat == "..." and depth == 200


def test_without_prometheus_client_metrics_is_501_and_the_rest_works(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)  # an import of it fails
    with serve() as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        r = c.get("/metrics")
        assert r.status_code == 501 and r.json()["error"] == "NotImplemented"
        assert "prometheus-client" in r.json()["message"]
        assert c.post("/api/workflows/approval/runs", json={"input": {"topic": "m"}}).status_code == 201
