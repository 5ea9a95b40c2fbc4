"""SSH multiplexing needs a private directory for its sockets; one is made only when a master can live there and
is removed on close, so fault contexts and refused runs leave nothing in /tmp (CI found kvt-ssh-* leftovers)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kvtestbed.inventory import Host
from kvtestbed.remote import Remote, Remotes


def _ours() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("kvt-ssh-*"))


def test_remotes_make_their_directory_on_first_use_and_remove_it() -> None:
    before = _ours()
    remotes = Remotes()
    assert _ours() == before  # a context that never connects leaves nothing
    remote = remotes(Host(name="pi-1", address="198.18.0.11"))
    made = _ours() - before
    assert len(made) == 1 and remote._control.startswith(str(next(iter(made))))
    assert remotes(Host(name="pi-2", address="198.18.0.12"))._control == remote._control  # one directory for all
    remotes.close()
    assert _ours() == before
    remotes.close()  # twice is harmless


def test_a_remote_without_multiplexing_makes_no_directory() -> None:
    before = _ours()
    with Remote(Host(name="pi-1", address="198.18.0.11"), multiplex=False):
        assert _ours() == before
    with Remote(Host(name="pi-1", address="198.18.0.11")) as multiplexed:
        assert len(_ours() - before) == 1 and multiplexed.multiplex
    assert _ours() == before
