"""Graphs, combination weights and transports between graph neighbours."""

from distlstm.network.graphs import TOPOLOGIES, Topology, make_topology, parse_edges
from distlstm.network.transport import CommStats, InProcessTransport, Transport

__all__ = ["TOPOLOGIES", "CommStats", "InProcessTransport", "Topology", "Transport", "make_topology",
           "parse_edges"]
