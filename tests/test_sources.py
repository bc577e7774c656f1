import hashlib

import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.sources import SOURCES, Source, fetch, offline_file


def test_fetch_downloads_verifies_and_caches(tmp_path):
    payload = b"weights" * 1000
    src_file = tmp_path / "w.bin"
    src_file.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    source = Source("demo", "a file", url=src_file.as_uri(), sha256=sha)
    cache = tmp_path / "cache"
    got = fetch(source, cache=cache, progress=False)
    assert got.read_bytes() == payload and cache in got.parents
    src_file.unlink()  # a second call is served from the cache
    assert fetch(source, cache=cache, progress=False) == got


def test_fetch_rejects_a_wrong_sha_and_leaves_nothing(tmp_path):
    src_file = tmp_path / "w.bin"
    src_file.write_bytes(b"abc")
    source = Source("demo", "a file", url=src_file.as_uri(), sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(EmotionLlamaError, match=r"sha256 .* does not match"):
        fetch(source, cache=cache, progress=False)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_fetch_local_path_and_unknown(tmp_path):
    f = tmp_path / "x.pth"
    f.write_bytes(b"1")
    assert fetch(str(f)) == f
    with pytest.raises(EmotionLlamaError, match="no such file, and not a known source"):
        fetch(str(tmp_path / "missing.pth"))


def test_every_source_says_where_it_comes_from():
    for s in SOURCES.values():
        assert s.url or s.hub_repo or s.browser_url, s.name


@pytest.mark.slow
def test_offline_package_file_is_verified():
    path = offline_file("smollm2_135m_instruct")
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    from emotion_llama import sources

    monkeypatch.setenv("EMOTION_LLAMA_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights" * 100)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    calls = []
    real = sources.sha256_of
    monkeypatch.setattr(sources, "sha256_of", lambda p, *a: calls.append(p) or real(p, *a))
    assert sources.verify(f, sha) == f and sources.verify(f, sha) == f
    assert len(calls) == 1  # the second check used the remembered size, mtime and sha256
    with open(f, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(EmotionLlamaError, match="does not match"):
        sources.verify(f, sha)
    assert len(calls) == 2
