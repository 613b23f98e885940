"""Pruning tools beyond the DNS layers themselves: reports of what pruning kept."""
