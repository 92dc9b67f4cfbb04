"""Hub downloads against a loopback server that answers like the hub; never the internet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fake_hub import SHA, FakeHub, Repo
from webui.hub import PARTIAL_DIR, DownloadError, Downloader, DownloadRequest, RemoteFile, choose_files
from webui.settings import PROJECT_ROOT

WEIGHTS = bytes(range(256)) * 4000  # ~1 MB
REPO = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": WEIGHTS,
    "pytorch_model.bin": b"pickle!",
    "tokenizer/tokenizer.json": b"{}",
    "flax_model.msgpack": b"flax",
    "modeling_custom.py": b"import os",
}


@pytest.fixture()
def hub():
    server = FakeHub({
        "org/tiny": Repo(dict(REPO)),
        "org/pickled": Repo({"config.json": b"{}", "pytorch_model.bin": b"pickle!"}),
        "org/gated": Repo({"config.json": b"{}", "model.safetensors": b"w"}, token="hf_secret_token"),
    })
    url = server.start()
    yield server, url
    server.stop()


def test_download_prefers_safetensors_and_writes_only_under_models(hub, tmp_path):
    server, url = hub
    models = tmp_path / "models"
    seen = []
    folder = Downloader(models, endpoint=url).download(DownloadRequest("org/tiny"), seen.append)
    assert folder == models / "org_tiny"
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert got == {"config.json", "model.safetensors", "tokenizer/tokenizer.json"}
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    # Progress rose to the total, in bytes.
    total = sum(len(REPO[n]) for n in got)
    assert seen[-1].done == seen[-1].total == total and seen[-1].fraction == 1.0
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert all(p.is_relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert not any(path.endswith(("pytorch_model.bin", ".py", ".msgpack")) for _, path, _, _ in server.log)


def test_patterns_and_revision(hub, tmp_path):
    server, url = hub
    folder = Downloader(tmp_path, endpoint=url).download(
        DownloadRequest("org/tiny", revision="v1.0", patterns=("*.json",)))
    assert sorted(p.name for p in folder.iterdir() if p.name != PARTIAL_DIR) == ["config.json", "tokenizer"]
    assert ("GET", "/api/models/org/tiny/revision/v1.0", None, None) in server.log


def test_a_partial_file_from_an_earlier_run_is_continued_with_a_range_request(hub, tmp_path):
    server, url = hub
    partial = tmp_path / "org_tiny" / PARTIAL_DIR / "model.safetensors.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(WEIGHTS[:300_000])  # what an earlier, killed run left behind
    Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny"))
    assert (tmp_path / "org_tiny" / "model.safetensors").read_bytes() == WEIGHTS
    gets = [rng for method, path, rng, _ in server.log if method == "GET" and path.endswith("model.safetensors")]
    assert gets == ["bytes=300000-"]
    assert not partial.exists()


def test_a_dropped_connection_fails_cleanly_and_the_next_run_continues(hub, tmp_path):
    server, url = hub
    server.cut_once.add("model.safetensors")
    downloader = Downloader(tmp_path, endpoint=url)
    with pytest.raises(DownloadError, match="run it again"):
        downloader.download(DownloadRequest("org/tiny"))
    assert not (tmp_path / "org_tiny" / "model.safetensors").exists()
    folder = downloader.download(DownloadRequest("org/tiny"))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    # A repeat finds every file complete and fetches nothing.
    before = len(server.log)
    downloader.download(DownloadRequest("org/tiny"))
    assert not [entry for entry in server.log[before:] if entry[0] == "GET" and "/resolve/" in entry[1]]


def test_a_corrupt_partial_file_is_caught_by_the_checksum(hub, tmp_path):
    _, url = hub
    partial = tmp_path / "org_tiny" / PARTIAL_DIR / "model.safetensors.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\xff" * 300_000)
    with pytest.raises(DownloadError, match="checksum"):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny"))
    assert not partial.exists() and not (tmp_path / "org_tiny" / "model.safetensors").exists()
    Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny"))
    assert (tmp_path / "org_tiny" / "model.safetensors").read_bytes() == WEIGHTS


def test_token_comes_from_the_environment(hub, tmp_path, monkeypatch):
    server, url = hub
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(DownloadError, match="needs access"):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/gated"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    folder = Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/gated"))
    assert (folder / "model.safetensors").read_bytes() == b"w"
    assert server.log[-1][3] == "Bearer hf_secret_token"


def test_missing_repo_and_pickle_only_repo(hub, tmp_path):
    _, url = hub
    with pytest.raises(DownloadError, match="not found"):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/nothing"))
    with pytest.raises(DownloadError, match="--allow-pickle"):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/pickled"))
    folder = Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/pickled", allow_pickle=True))
    assert (folder / "pytorch_model.bin").read_bytes() == b"pickle!"


def test_an_unreachable_hub_is_a_message(tmp_path):
    from tests.conftest import free_port

    with pytest.raises(DownloadError, match="cannot reach the hub"):
        Downloader(tmp_path, endpoint=f"http://127.0.0.1:{free_port()}").download(DownloadRequest("org/tiny"))
    assert not (tmp_path / "org_tiny").exists()


def test_offline_mode_is_restored_after_a_download(hub, tmp_path):
    from huggingface_hub import constants

    _, url = hub
    was = constants.HF_HUB_OFFLINE
    Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny", patterns=("config.json",)))
    assert constants.HF_HUB_OFFLINE == was
    with pytest.raises(DownloadError):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/nothing"))
    assert constants.HF_HUB_OFFLINE == was


@pytest.mark.parametrize("repo_id", [
    "../etc", "org/../x", "/abs/path", "org", "org/name/extra", "org/..", "-org/x", "org/x\x00", "", "o" * 97 + "/x",
    "org/na me", "C:\\x/y", "org/.hidden",
])
def test_bad_names_are_refused_before_any_request(repo_id):
    with pytest.raises(DownloadError):
        DownloadRequest(repo_id)


@pytest.mark.parametrize("field", [{"revision": "../main"}, {"revision": ""}, {"patterns": ("../*",)},
                                   {"patterns": ("/etc/*",)}, {"patterns": ("a;b",)}])
def test_bad_revisions_and_patterns_are_refused(field):
    with pytest.raises(DownloadError):
        DownloadRequest("org/x", **field)


@pytest.mark.parametrize("name", ["../evil.json", "/etc/passwd.json", "a/../../b.json", "a\\..\\b.json", "./x.json"])
def test_a_server_listing_an_escaping_file_is_refused(name):
    with pytest.raises(DownloadError, match="unsafe file name"):
        choose_files([RemoteFile("config.json", 2), RemoteFile(name, 1)], DownloadRequest("org/x"))


def test_command_line_download(hub, tmp_path):
    _, url = hub
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "webui", "--download", "org/tiny", "--revision", "main", "--include", "*.json",
         "--model-dir", str(tmp_path)],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "org_tiny" / "config.json").read_bytes() == REPO["config.json"]
    assert not (tmp_path / "org_tiny" / "model.safetensors").exists()
    refused = subprocess.run([sys.executable, "-m", "webui", "--download", "../x", "--model-dir", str(tmp_path)],
                             env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "org/name" in refused.stderr


def test_fake_hub_commit_is_used_for_files(hub, tmp_path):
    server, url = hub
    Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny", patterns=("config.json",)))
    assert any(f"/resolve/{SHA}/config.json" in path for _, path, _, _ in server.log)


# -- round 2, N46/N47: a hub that redirects elsewhere, or sends more than it declares ------
def test_the_token_never_follows_a_redirect_to_another_host(tmp_path, monkeypatch):
    cdn = FakeHub({"org/tiny": Repo(dict(REPO))}, host="127.0.0.2")
    cdn_url = cdn.start()
    server = FakeHub({"org/tiny": Repo(dict(REPO), token="hf_SECRET_TOKEN_123")}, redirect_to=cdn_url)
    url = server.start()
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_SECRET_TOKEN_123")
        folder = Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny"))
        assert (folder / "model.safetensors").read_bytes() == WEIGHTS  # fetched from the other host
        blobs = [entry for entry in cdn.log if entry[1].startswith("/blob/")]
        assert len(blobs) >= 2 and all(auth is None for *_, auth in blobs), blobs
        assert all(auth == "Bearer hf_SECRET_TOKEN_123" for *_, auth in server.log)  # the hub itself gets it
    finally:
        server.stop()
        cdn.stop()


def test_a_body_longer_than_declared_is_refused_and_its_part_removed(tmp_path):
    server = FakeHub({"org/tiny": Repo(dict(REPO))}, declared={"model.safetensors": 10})
    url = server.start()
    try:
        with pytest.raises(DownloadError, match="more than the 10 bytes it declared"):
            Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/tiny"))
        partial = tmp_path / "org_tiny" / PARTIAL_DIR / "model.safetensors.part"
        assert not partial.exists() and not (tmp_path / "org_tiny" / "model.safetensors").exists()
    finally:
        server.stop()
