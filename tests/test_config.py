"""Configuration: defaults work, every bad value stops start with a message naming it."""

import pytest

from feedproxy.config import DEFAULT_UPSTREAM_URL, SETTINGS, Config
from feedproxy.errors import ConfigError


def test_defaults_need_no_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = Config.from_env({})
    assert config.data_dir == str(tmp_path / "feedproxy")
    assert config.upstream_url == DEFAULT_UPSTREAM_URL
    assert (config.window_days, config.refresh_seconds) == (30, 900)


def test_values_are_read(tmp_path):
    listing = tmp_path / "listing.json"
    listing.write_text("[]")
    config = Config.from_env({
        "FEEDPROXY_UPSTREAM_URL": str(listing), "FEEDPROXY_WINDOW_DAYS": "7",
        "FEEDPROXY_REFRESH_SECONDS": "600", "FEEDPROXY_TIMEOUT": "2.5", "FEEDPROXY_MAX_PAGES": "3",
        "FEEDPROXY_MAX_PAPERS": "5000",
    })
    assert (config.upstream_url, config.window_days, config.refresh_seconds) == (str(listing), 7, 600)
    assert (config.read_timeout, config.max_pages, config.max_papers) == (2.5, 3, 5000)
    assert Config.from_env({"FEEDPROXY_UPSTREAM_URL": listing.as_uri()}).upstream_url == listing.as_uri()


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("FEEDPROXY_WINDOW_DAYS", "abc", "whole number from 1 to 3650"),
        ("FEEDPROXY_WINDOW_DAYS", "0", "from 1 to 3650"),
        ("FEEDPROXY_REFRESH_SECONDS", "5", "from 60 to 86400"),
        ("FEEDPROXY_MAX_PAPERS", "99", "from 100 to 1000000"),
        ("FEEDPROXY_TIMEOUT", "-1", "from 0.1 to 300"),
        ("FEEDPROXY_TIMEOUT", "soon", "number of seconds"),
        ("FEEDPROXY_UPSTREAM_URL", "ftp://example.org/x", "scheme 'ftp'"),
        ("FEEDPROXY_UPSTREAM_URL", "https:///nohost", "no host"),
        ("FEEDPROXY_UPSTREAM_URL", "/does/not/exist.json", "does not exist"),
        ("FEEDPROXY_WINDOWDAYS", "3", "unknown setting FEEDPROXY_WINDOWDAYS"),
        ("FEEDPROXY_DATA_DIR", "/proc/feedproxy", "cannot be created"),
        ("FEEDPROXY_FEEDS", "arxiv", "is not name=url"),
        ("FEEDPROXY_FEEDS", "a=ftp://x.org/f", "must be http:// or https://"),
        ("FEEDPROXY_FEEDS", "hf-daily=https://x.org/f", "used twice"),
        ("FEEDPROXY_FEEDS", "a=https://x.org/1,a=https://x.org/2", "used twice"),
        ("FEEDPROXY_FEEDS", "Bad Name=https://x.org/1", "must be 1 to 40 of"),
        ("FEEDPROXY_ALLOW_URL_HOSTS", "http://x.org/path", "is not a host name"),
        ("FEEDPROXY_HF_TOKEN", "hf_two words", "one word of printable ASCII"),
        ("FEEDPROXY_HF_TOKEN", "hf_line\nbreak", "one word of printable ASCII"),
        ("FEEDPROXY_HF_TOKEN", "hf_\u00e9t\u00e9", "one word of printable ASCII"),
    ],
)
def test_bad_values_name_the_setting(name, value, words):
    with pytest.raises(ConfigError) as err:
        Config.from_env({name: value})
    assert name in str(err.value) and words in str(err.value)


def test_feeds_and_allowed_hosts_are_read():
    config = Config.from_env({
        "FEEDPROXY_FEEDS": " arxiv-cs-lg=https://rss.arxiv.org/atom/cs.LG , Blog=http://blog.example/feed ",
        "FEEDPROXY_ALLOW_URL_HOSTS": "rss.arxiv.org, *.example.org",
    })
    assert config.feeds == (("arxiv-cs-lg", "https://rss.arxiv.org/atom/cs.LG"), ("blog", "http://blog.example/feed"))
    assert config.allow_url_hosts == frozenset({"rss.arxiv.org", "*.example.org"})
    assert Config.from_env({}).allow_url_hosts == frozenset()


def test_every_documented_setting_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for name in SETTINGS + ("PORT", "WEB_CONCURRENCY"):
        assert f"`{name}`" in readme, name


TOKEN = "hf_TestTokenNotARealOne123"


def test_the_token_is_read_and_kept_out_of_every_repr():
    config = Config.from_env({"FEEDPROXY_HF_TOKEN": TOKEN})
    assert config.hf_token == TOKEN
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert Config.from_env({"FEEDPROXY_HF_TOKEN": ""}).hf_token is None


@pytest.mark.parametrize("value", ["hf_two words " + TOKEN, TOKEN + "\u00e9"])
def test_a_bad_token_is_not_repeated_in_the_message(value):
    with pytest.raises(ConfigError) as err:
        Config.from_env({"FEEDPROXY_HF_TOKEN": value})
    assert TOKEN not in str(err.value)


def test_the_token_is_sent_only_over_https_or_to_loopback():
    with pytest.raises(ConfigError) as err:
        Config.from_env({"FEEDPROXY_HF_TOKEN": TOKEN, "FEEDPROXY_UPSTREAM_URL": "http://mirror.example/api/daily_papers"})
    assert str(err.value) == ("FEEDPROXY_HF_TOKEN would be sent in the clear to mirror.example: it is sent only over "
                              "https:// (or to a loopback address), so give FEEDPROXY_UPSTREAM_URL as https://")
    loopback = Config.from_env({"FEEDPROXY_HF_TOKEN": TOKEN, "FEEDPROXY_UPSTREAM_URL": "http://127.0.0.1:9/api"})
    assert loopback.hf_token == TOKEN
