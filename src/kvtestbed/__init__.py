"""kvtestbed: an Ansible-provisioned testbed for event-driven key-value and messaging systems."""

__version__ = "0.2.0"
