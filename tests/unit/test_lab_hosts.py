"""A lab host's root as the controller writes it before boot: an emulated host (a foreign userland under QEMU) gets
its address from a oneshot unit, since systemd-networkd cannot run there; a native one keeps networkd's file only."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvtestbed.lab.hosts import Host, HostSpec, Lab
from kvtestbed.lab.runtime import LabError

UNIT = "etc/systemd/system/kvtestbed-lab-address.service"


def _host(tmp_path: Path, userland: str) -> Host:
    lab = Lab(hosts_dir=str(tmp_path / "hosts"), prefix=24, gateway="198.18.9.1", bridge="kvtb-t", image="/img/native",
              image_id="n" * 12, ssh_pubkey="ssh-ed25519 AAAA test",
              foreign_images={"arm64": {"path": "/img/arm64", "id": "a" * 12, "emulated": True}})
    host = Host(lab, HostSpec(name="h-1", address="198.18.9.11", userland=userland))
    for sub in ("etc/ssh", "root"):
        (Path(host.root) / sub).mkdir(parents=True, exist_ok=True)
    return host


def test_an_emulated_host_is_addressed_by_a_oneshot_unit_and_boots_its_own_image(tmp_path: Path) -> None:
    host = _host(tmp_path, "arm64")
    assert host.emulated and (host.image, host.image_id) == ("/img/arm64", "a" * 12)
    assert host.configure() is True
    unit = (Path(host.root) / UNIT).read_text()
    assert "ExecStart=/usr/sbin/ip address replace 198.18.9.11/24 dev host0" in unit
    assert "ExecStart=/usr/sbin/ip route replace default via 198.18.9.1" in unit
    wants = Path(host.root) / "etc/systemd/system/multi-user.target.wants/kvtestbed-lab-address.service"
    assert wants.is_symlink() and str(wants.readlink()) == "/" + UNIT
    assert host.configure() is False  # a second pass changes nothing


def test_a_native_host_keeps_networkd_and_the_native_image(tmp_path: Path) -> None:
    host = _host(tmp_path, "")
    assert not host.emulated and host.image == "/img/native"
    host.configure()
    assert not (Path(host.root) / UNIT).exists()
    assert "Address=198.18.9.11/24" in (Path(host.root) / "etc/systemd/network/10-lab.network").read_text()


def test_a_userland_without_its_image_is_one_line(tmp_path: Path) -> None:
    host = _host(tmp_path, "armhf")
    with pytest.raises(LabError, match=r"^host h-1: no armhf image was built for it$"):
        host.mount()
