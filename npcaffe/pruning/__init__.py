"""Pruning tools beyond the DNS layers themselves: what to score (`criteria`: magnitude, OBD,
L-OBS, SNIP), scores to masks and masks onto layers (`select`), reports of what pruning kept
(`report`)."""
