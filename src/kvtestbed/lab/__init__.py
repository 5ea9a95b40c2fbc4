"""The lab: emulated Pi and PC hosts on this machine (systemd-nspawn on a bridge), and its status."""
