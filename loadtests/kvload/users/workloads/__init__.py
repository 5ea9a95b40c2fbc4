"""Workload traffic beside the agents: Locust writes what an agent's own driver would, and the agents measure it.

One module per workload: observer (ObserverWriteUser), streams (StreamsDirectUser, StreamsWorkerUser), expiry
(ExpiryKeysUser, seed 000); common holds the redis-py client and the checks they share.
"""

from kvload.users.workloads.expiry import ExpiryKeysUser
from kvload.users.workloads.observer import ObserverWriteUser
from kvload.users.workloads.streams import StreamsDirectUser, StreamsWorkerUser

__all__ = ["ExpiryKeysUser", "ObserverWriteUser", "StreamsDirectUser", "StreamsWorkerUser"]
