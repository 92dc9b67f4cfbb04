"""Hub downloads of GGUF repositories: list the files with sizes, fetch only the chosen one
(or every part of a split one)."""

from __future__ import annotations

import pytest

from tests.fake_hub import FakeHub, Repo
from webui.hub import DownloadError, DownloadRequest, Downloader

GGUF_REPO = {
    "README.md": b"# quants",
    "m-Q4_K_M.gguf": b"GGUF" + b"4" * 40,
    "m-Q8_0.gguf": b"GGUF" + b"8" * 80,
    "big/m-F16-00001-of-00002.gguf": b"GGUF" + b"a" * 100,
    "big/m-F16-00002-of-00002.gguf": b"b" * 60,
}


@pytest.fixture()
def hub():
    server = FakeHub({"org/m-GGUF": Repo(dict(GGUF_REPO))})
    url = server.start()
    yield server, url
    server.stop()


def fetched(server) -> set[str]:
    return {path.rsplit("/resolve/", 1)[1].split("/", 1)[1] for method, path, _, _ in server.log
            if method == "GET" and "/resolve/" in path}


def test_lists_gguf_files_with_sizes_a_split_one_as_its_first_part(hub, tmp_path):
    _, url = hub
    listed = Downloader(tmp_path, endpoint=url).list_gguf(DownloadRequest("org/m-GGUF"))
    assert sorted((f.name, f.size) for f in listed) == [
        ("big/m-F16-00001-of-00002.gguf", 104 + 60), ("m-Q4_K_M.gguf", 44), ("m-Q8_0.gguf", 84)]


def test_fetches_only_the_chosen_file(hub, tmp_path):
    server, url = hub
    folder = Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/m-GGUF", patterns=("m-Q8_0.gguf",)))
    assert (folder / "m-Q8_0.gguf").read_bytes() == GGUF_REPO["m-Q8_0.gguf"]
    assert fetched(server) == {"m-Q8_0.gguf"}


def test_a_split_file_comes_with_all_its_parts(hub, tmp_path):
    server, url = hub
    folder = Downloader(tmp_path, endpoint=url).download(
        DownloadRequest("org/m-GGUF", patterns=("big/m-F16-00001-of-00002.gguf",)))
    assert fetched(server) == {"big/m-F16-00001-of-00002.gguf", "big/m-F16-00002-of-00002.gguf"}
    assert (folder / "big" / "m-F16-00002-of-00002.gguf").read_bytes() == GGUF_REPO["big/m-F16-00002-of-00002.gguf"]


def test_without_a_choice_it_asks_for_one_and_downloads_nothing(hub, tmp_path):
    server, url = hub
    with pytest.raises(DownloadError, match=r"holds GGUF files; name the one .* m-Q8_0.gguf"):
        Downloader(tmp_path, endpoint=url).download(DownloadRequest("org/m-GGUF"))
    assert not fetched(server)
