"""The API's contract made consistent (p22/server_probe S3, S6, S7, S10, S11): each test failed on the
code before its fix.

- the README's multipart search (`-F image=@photo -F request=@req.json`) is answered; a part sent twice
  or too many parts are a 422 that names the parts, never Starlette's 400;
- every JSON-body route (search, export, jobs) answers a body sent as another type with the same 415,
  and reads a body without a Content-Type as JSON;
- `vidsearch serve --read-auth` without keys refuses to start, and a read refused for want of keys
  does not talk about writes;
- job records are kept for a while, not forever; `GET /v1/jobs` pages (`limit`, `state`) and a job
  keeps each path once;
- a wrong key is a 401 on /readyz and /openapi.json too (never on /healthz), a picture in unpadded or
  URL-safe base64 is read, and OpenAPI lists what the jobs routes answer.
"""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api_fixtures import API_KEY
from vidsearch.config import load_settings
from vidsearch.indexer.jobs import JobManager
from vidsearch.indexer.ownership import this_process
from vidsearch.server import create_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WRONG = {"Authorization": "Bearer not-a-key"}


def png(size: int = 64) -> bytes:
    """A small picture whose base64 has padding to lose (a length not a multiple of 3) and characters
    that base64url spells otherwise (`+` or `/`)."""
    from PIL.PngImagePlugin import PngInfo

    img = Image.new("RGB", (size, size))
    for x in range(size):
        img.putpixel((x, x), (255, 0, 0))
    for n in range(64):  # a text chunk of another length until both hold
        info = PngInfo()
        info.add_text("c", "x" * n + "\xff\xfe" * (n % 5))
        out = io.BytesIO()
        img.save(out, format="PNG", pnginfo=info)
        data = out.getvalue()
        if len(data) % 3 and set("+/") & set(base64.b64encode(data).decode()):
            return data
    raise AssertionError("no such picture")


@pytest.fixture(scope="module")
def client(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as c:
        yield c


# -- S3: multipart -----------------------------------------------------------------------------------
def test_the_readmes_multipart_search_with_a_request_file_is_answered(client):
    """`-F image=@photo -F request=@req.json` was a 400 "Too many files" (max_files=1)."""
    request = ("req.json", b'{"top_k": 2, "group_by": "moment"}', "application/json")
    resp = client.post("/v1/search", files=[("image", ("photo.png", png(), "image/png")), ("request", request)])
    assert resp.status_code == 200 and resp.json()["group_by"] == "moment" and len(resp.json()["results"]) <= 2, resp.text


def test_extra_multipart_parts_are_a_422_that_names_the_parts(client):
    picture = ("image", ("photo.png", png(), "image/png"))
    twice = client.post("/v1/search", files=[picture, picture])  # was Starlette's 400 "Too many files"
    assert twice.status_code == 422 and "image" in twice.json()["detail"] and "more than once" in twice.json()["detail"], twice.text
    many = client.post("/v1/search", files=[picture] * 12)
    assert many.status_code == 422 and "`query`, `image` and `request`" in many.json()["detail"], many.text
    fields = client.post("/v1/search", files=[(f"f{i}", (None, b"x")) for i in range(12)])  # was a 400 "Too many fields"
    assert fields.status_code == 422 and "`query`, `image` and `request`" in fields.json()["detail"], fields.text
    query_file = client.post("/v1/search", files=[("query", ("q.txt", b"red", "text/plain"))])  # was dropped silently
    assert query_file.status_code == 422 and "query" in query_file.json()["detail"], query_file.text


def test_an_unreadable_form_is_a_400_without_a_doubled_code(client):
    resp = client.post("/v1/search", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})  # no boundary
    detail = resp.json()["detail"]
    assert resp.status_code == 400 and detail.startswith("the multipart form cannot be read: ") and "400:" not in detail, detail


# -- S7: one 415 for every JSON-body route -----------------------------------------------------------
def _bodies(client, settings) -> dict[str, bytes]:
    vid = client.get("/v1/videos").json()["videos"][0]["id"]
    return {
        "/v1/search": b'{"query": "red", "top_k": 1}',
        "/v1/export": json.dumps({"items": [{"video_id": vid, "start": 0, "end": 1}]}).encode(),
        "/v1/jobs": json.dumps({"paths": [str(settings.library_roots[0] / "not-there")]}).encode(),
    }


def test_every_json_route_explains_a_body_sent_as_another_type(client, shared_library):
    """/v1/export and /v1/jobs answered `curl -d` (a form) and text/plain with a 422 "Input should be a
    valid dictionary"; only /v1/search said to send JSON."""
    settings, _ = shared_library
    for url, body in _bodies(client, settings).items():
        for kind in ("application/x-www-form-urlencoded", "text/plain"):
            resp = client.post(url, content=body, headers={**AUTH, "content-type": kind})
            assert resp.status_code == 415, (url, kind, resp.status_code, resp.text)
            assert "Content-Type: application/json" in resp.json()["detail"] and kind in resp.json()["detail"], resp.text
            assert ("multipart" in resp.json()["detail"]) == (url == "/v1/search"), resp.text  # only search takes a form


def test_every_json_route_reads_a_body_without_a_content_type_as_json(client, shared_library):
    settings, _ = shared_library
    answers = {url: client.post(url, content=body, headers=AUTH) for url, body in _bodies(client, settings).items()}
    assert answers["/v1/search"].status_code == 200, answers["/v1/search"].text
    assert answers["/v1/export"].status_code == 200 and answers["/v1/export"].content, answers["/v1/export"].text
    jobs = answers["/v1/jobs"]  # read: the path is looked for (it was a 422 before the body was understood)
    assert jobs.status_code == 400 and "not found" in jobs.json()["detail"], jobs.text


def test_openapi_lists_the_415_of_json_bodies_and_what_jobs_answer(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/search", "/v1/export", "/v1/jobs"):
        assert "415" in paths[path]["post"]["responses"], path
    assert set(paths["/v1/jobs"]["get"]["responses"]) == {"200", "401", "403", "422"}  # no 400, 404
    assert "404" not in paths["/v1/jobs"]["post"]["responses"] and "400" in paths["/v1/jobs"]["post"]["responses"]
    params = {p["name"] for p in paths["/v1/jobs"]["get"]["parameters"]}
    assert {"limit", "state"} <= params
    assert "401" in paths["/readyz"]["get"]["responses"]


# -- S6: --read-auth without keys --------------------------------------------------------------------
def test_serve_refuses_read_auth_without_keys(tmp_path, monkeypatch):
    """It started silently, and every read was a 403 about writes."""
    import uvicorn
    from typer.testing import CliRunner

    from vidsearch.cli import app

    for name in ("VIDSEARCH_API_KEYS", "VIDSEARCH_READ_AUTH", "VIDSEARCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.append(k))  # never serve from a test
    config = tmp_path / "empty.toml"
    config.write_text("")
    args = ["serve", "--db", str(tmp_path / "db"), "--config", str(config), "--read-auth"]
    refused = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and not served, (refused.exit_code, refused.output)
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "read_auth" in lines[0] and "--api-key" in lines[0], refused.output
    started = CliRunner().invoke(app, [*args, "--api-key", API_KEY], env={"COLUMNS": "200"})
    assert started.exit_code == 0 and len(served) == 1, started.output


def test_a_read_refused_for_want_of_keys_does_not_talk_about_writes(shared_library):
    settings, _ = shared_library
    keyless = settings.model_copy(update={"read_auth": True, "api_keys": []})  # an app built without the CLI's check
    with TestClient(create_app(keyless)) as client:
        for url in ("/v1/videos", "/v1/index", "/openapi.json"):
            resp = client.get(url)
            assert resp.status_code == 403 and "reads" in resp.json()["detail"] and "writes" not in resp.json()["detail"], (url, resp.text)
        write = client.post("/v1/jobs", json={"paths": ["/x"]})
        assert write.status_code == 403 and "writes are disabled" in write.json()["detail"], write.text


# -- S10: job records ---------------------------------------------------------------------------------
def _records(db, states: list[str]) -> list[str]:
    """Job records as servers leave them, oldest first (ids j000, j001, ...), owned by this process."""
    jobs = db / ".jobs"
    jobs.mkdir(parents=True)
    ids = []
    for i, state in enumerate(states):
        finished = state in ("succeeded", "failed", "cancelled")
        record = {"id": f"j{i:03d}", "kind": "index", "paths": ["/x"], "state": state, "created_at": 1000.0 + i,
                  "finished_at": 2000.0 + i if finished else None, "_owner": this_process()}  # fmt: skip
        (jobs / f"j{i:03d}.json").write_text(json.dumps(record))
        ids.append(record["id"])
    return ids


def test_finished_job_records_are_pruned_and_active_ones_kept(tmp_path, monkeypatch, tiny_backbone):
    """Records were kept forever, and every listing read all of them (4.9 MB after 112 jobs)."""
    monkeypatch.setattr(JobManager, "keep_finished", 3, raising=False)
    db = tmp_path / "db"
    ids = _records(db, ["running", "queued", "succeeded", "failed", "cancelled", "succeeded", "failed", "succeeded"])
    settings = load_settings(None, db=db, model="tiny", pretrained="none", speech=False, ocr=False)
    manager = JobManager(settings, backbone=lambda: tiny_backbone)
    kept = [j.id for j in manager.list()]
    assert kept == [ids[7], ids[6], ids[5], ids[1], ids[0]], kept  # newest first; the queued and running old ones stay
    assert sorted(f.stem for f in (db / ".jobs").glob("*.json")) == sorted(kept)
    assert [j.id for j in manager.list(state="succeeded")] == [ids[7], ids[5]]
    assert [j.id for j in manager.list(limit=2)] == [ids[7], ids[6]]
    # a new job keeps each path once, in order; when it ends, the oldest finished record goes
    job = manager.submit("index", ["/b", "/a", "/b", "/a", "/c"])
    assert job.paths == ["/b", "/a", "/c"] and json.loads((db / ".jobs" / f"{job.id}.json").read_text())["paths"] == job.paths
    deadline = time.monotonic() + 60
    while manager.get(job.id).state not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [j.id for j in manager.list()] == [job.id, ids[7], ids[6], ids[1], ids[0]]
    assert not (db / ".jobs" / f"{ids[5]}.json").exists()


def test_a_long_jobs_result_outlives_jobs_made_after_it(tmp_path, monkeypatch):
    """Pruning ranked finished jobs by when they were made: a long job's record was deleted the moment it
    finished where the newer jobs had finished first, and its waiter got a 404 (p22 verification N2)."""
    monkeypatch.setattr(JobManager, "keep_finished", 2, raising=False)
    db = tmp_path / "db"
    ids = _records(db, ["succeeded", "succeeded", "succeeded"])
    record = json.loads((db / ".jobs" / f"{ids[0]}.json").read_text())
    (db / ".jobs" / f"{ids[0]}.json").write_text(json.dumps({**record, "finished_at": 9999.0}))  # made first, finished last
    settings = load_settings(None, db=db, model="tiny", pretrained="none", speech=False, ocr=False)
    manager = JobManager(settings, backbone=lambda: None)
    assert {j.id for j in manager.list()} == {ids[0], ids[2]}


def test_blank_keys_are_no_keys(tmp_path):
    """`--api-key "$KEY"` with KEY unset gave a key '', which counted as configured: a --read-auth server
    started and a URL signed with the empty key opened every video (p22 verification N1)."""
    from vidsearch.signing import sign_query, verify

    settings = load_settings(None, db=tmp_path / "db", api_keys=["", "  ", " K1\n"])
    assert settings.api_keys == ["K1"]
    exp, sig = (part.split("=")[1] for part in sign_query("", "vid").split("&"))
    assert verify(["", "K1"], "vid", exp, sig) == "signed URL not accepted"


def test_job_list_pages_and_filters(tmp_path):
    db = tmp_path / "db"
    ids = _records(db, ["succeeded"] * 60 + ["failed"] * 3 + ["queued"])
    settings = load_settings(None, db=db, model="tiny", pretrained="none", api_keys=[API_KEY], speech=False, ocr=False)
    with TestClient(create_app(settings), headers=AUTH) as client:
        default = client.get("/v1/jobs").json()
        assert [j["id"] for j in default] == ids[::-1][:50], len(default)  # newest first, 50 by default
        assert len(client.get("/v1/jobs", params={"limit": 1000}).json()) == 64
        assert [j["id"] for j in client.get("/v1/jobs", params={"state": "failed"}).json()] == ids[62:59:-1]
        assert [j["id"] for j in client.get("/v1/jobs", params={"state": "queued", "limit": 1}).json()] == [ids[63]]
        for bad in ({"limit": 0}, {"limit": 1001}, {"state": "done"}):
            assert client.get("/v1/jobs", params=bad).status_code == 422, bad


# -- S11 ----------------------------------------------------------------------------------------------
def test_a_wrong_key_is_a_401_on_readiness_and_the_apis_description(shared_library):
    """/readyz and /openapi.json ignored a wrong key on an open server (/readyz even answered its
    details); liveness never looks at a key."""
    settings, _ = shared_library
    for read_auth in (False, True):
        with TestClient(create_app(settings.model_copy(update={"read_auth": read_auth}))) as client:
            for url in ("/readyz", "/openapi.json", "/docs"):
                resp = client.get(url, headers=WRONG)
                expected = 403 if read_auth and url != "/readyz" else 401  # (under read_auth the docs need a key: 403 for a wrong one, as before)
                assert resp.status_code == expected and "not accepted" in resp.json()["detail"], (read_auth, url, resp.status_code, resp.text)
                assert client.get(url, headers=AUTH).status_code == 200, url
            assert client.get("/readyz").status_code == 200
            assert client.get("/healthz", headers=WRONG).status_code == 200
    with TestClient(create_app(settings)) as client:
        assert client.get("/openapi.json").status_code == 200  # no key on an open server: open, as before
    keyless = settings.model_copy(update={"api_keys": []})  # a server with no keys has nothing to compare with
    with TestClient(create_app(keyless)) as client:
        assert client.get("/readyz", headers=WRONG).status_code == 200


def test_a_picture_in_unpadded_or_url_safe_base64_is_read(client):
    """"Incorrect padding" and "Only base64 data is allowed" (415) for what JavaScript and JWT-style
    encoders send."""
    data = png()
    standard = base64.b64encode(data).decode()
    url_safe = base64.urlsafe_b64encode(data).decode()
    assert standard.endswith("=") and url_safe != standard
    expected = client.post("/v1/search", json={"image": standard, "top_k": 3})
    assert expected.status_code == 200, expected.text
    ranked = [r["video"]["id"] for r in expected.json()["results"]]
    for image in (standard.rstrip("="), url_safe.rstrip("="), url_safe, "data:image/png;base64," + url_safe.rstrip("=")):
        resp = client.post("/v1/search", json={"image": image, "top_k": 3})
        assert resp.status_code == 200, (image[:40], resp.text)
        assert [r["video"]["id"] for r in resp.json()["results"]] == ranked
    assert client.post("/v1/search", json={"image": "not base64!"}).status_code == 415  # still refused
