"""kvtestbed: an Ansible-provisioned testbed for event-driven key-value and messaging systems."""

__version__ = "0.1.0"
