"""The lab: emulated Pi and PC hosts on this machine (systemd-nspawn on a bridge), and its status.

Importable without Ansible (roles/lab/library wraps these for the playbooks, a fault injector imports them):
plan (inventory check), image (base image), network (bridge, NAT), forwarding (the machine's shared
ip_forward), hosts (containers), daemon (chronyd), status (`kvtestbed lab status`), runtime (commands with
timeouts, processes, cgroups, mounts) and debian_mirror (the controller's apt mirror; also a stdlib script).
"""
