"""Deploy: ansible-playbook runs with one line per changed or failed task."""
