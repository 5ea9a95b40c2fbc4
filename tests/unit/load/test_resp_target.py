"""--host URLs of the key-value users (kvload.resp.target): every form we accept, and one line for each we refuse,
never repeating a password."""

from __future__ import annotations

import pytest
from kvload.resp.target import Target, TargetError, parse_target


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380", Target("standalone", False, (("127.0.0.1", 6380),))),
        ("redis://localhost", Target("standalone", False, (("localhost", 6379),))),
        ("rediss://cache.lab:6390/3", Target("standalone", True, (("cache.lab", 6390),), db=3)),
        ("redis://loadgen@10.0.0.5:6379/0", Target("standalone", False, (("10.0.0.5", 6379),), username="loadgen")),
        ("redis://user%40x@h:1", Target("standalone", False, (("h", 1),), username="user@x")),
        ("redis://[::1]:6379", Target("standalone", False, (("::1", 6379),))),
        ("REDIS://h:1", Target("standalone", False, (("h", 1),))),
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2/mymaster",
            Target("sentinel", False, (("10.0.0.1", 26379), ("10.0.0.2", 26379)), master_name="mymaster"),
        ),
        (
            "rediss+sentinel://app@s1:5000/kvt/2",
            Target("sentinel", True, (("s1", 5000),), username="app", db=2, master_name="kvt"),
        ),
        (
            "redis+cluster://n1:7000,n2:7001,[fe80::1]:7002",
            Target("cluster", False, (("n1", 7000), ("n2", 7001), ("fe80::1", 7002))),
        ),
        ("rediss+cluster://n1", Target("cluster", True, (("n1", 6379),))),
        ("redis+cluster://n1:7000/0", Target("cluster", False, (("n1", 7000),))),
    ],
)
def test_accepted_urls(url: str, expected: Target) -> None:
    target = parse_target(url)
    assert (target.kind, target.tls, target.nodes, target.username, target.db, target.master_name) == (
        expected.kind,
        expected.tls,
        expected.nodes,
        expected.username,
        expected.db,
        expected.master_name,
    )
    assert str(target) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "--host: missing"),
        ("127.0.0.1:6379", "unknown scheme"),
        ("http://127.0.0.1:6379", "unknown scheme"),
        ("redis://", "missing host"),
        ("redis://:6379", "missing host"),
        ("redis://h:0", "not a port number"),
        ("redis://h:70000", "not a port number"),
        ("redis://h:abc", "not a port number"),
        ("redis://::1:6379", "IPv6 addresses need brackets"),
        ("redis://[::1:6379", "bad IPv6 address"),
        ("redis://h1:1,h2:2", "takes one host"),
        ("redis://h:1/x", "is not a number"),
        ("redis://h:1/0/1", "unexpected path"),
        ("redis://h:1/?db=1", "query parameters"),
        ("redis+sentinel://s1:26379", "name the master"),
        ("redis+cluster://n1:7000/1", "only database 0"),
    ],
)
def test_refused_urls_are_one_line_naming_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(TargetError) as err:
        parse_target(url)
    message = str(err.value)
    assert says in message
    assert message.startswith("--host")
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2secret@127.0.0.1:6379",
        "redis://app:hunter2secret@127.0.0.1:6379/0",
        "rediss+sentinel://app:hunter2secret@s1/kvt",
        "redis+cluster://app:hunter2secret@n1:7000,n2:7000",
        "redis://app:hunter2secret@h:notaport",
        "http://app:hunter2secret@h",
    ],
)
def test_a_password_in_the_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(TargetError) as err:
        parse_target(url)
    message = str(err.value)
    assert "hunter2secret" not in message
    if url.startswith("redis"):
        assert "--kvt-password-file" in message
